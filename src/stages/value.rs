//! `value`: a constant JSON value, for wiring pipelines, tests and benchmarks.

use crate::stage::{parse, parse_checked, InputSlot, ParamSpec, ParamType as T, Stage, StageCtx, StageError};
use serde::Deserialize;
use serde_json::json;

/// `value`: writes its `value` parameter as `value.json`. Optional `sleep_ms` and `fail` help test pipelines.
pub struct ValueStage;

/// The parameters of a `value` node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueParams {
    /// The value written to `value.json`.
    pub value: serde_json::Value,
    /// Free text (part of the key only).
    pub comment: String,
    /// Sleep this long before finishing.
    pub sleep_ms: u64,
    /// Fail deliberately.
    pub fail: bool,
}

impl Stage for ValueStage {
    fn kind(&self) -> &'static str {
        "value"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "a constant JSON value (wiring, tests, benchmarks)"
    }
    fn output(&self) -> &'static str {
        "json"
    }
    fn inputs(&self) -> Vec<InputSlot> {
        vec![InputSlot::many("after", &["*"]).optional()]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::opt("value", T::Any, json!(null), "the value written to value.json"),
            ParamSpec::opt("comment", T::Str, json!(""), "free text; part of the key but not of the output"),
            ParamSpec::opt("sleep_ms", T::Int { min: 0, max: 86_400_000 }, json!(0), "sleep this long before finishing"),
            ParamSpec::opt("fail", T::Bool, json!(false), "fail deliberately"),
        ]
    }
    fn env_keys(&self) -> &'static [&'static str] {
        &[]
    }
    fn validate(&self, params: &serde_json::Value) -> Result<(), (String, String)> {
        parse_checked::<ValueParams>(params, &self.params()).map(|_| ())
    }
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<(), StageError> {
        let p: ValueParams = parse(ctx.params)?;
        let ms = p.sleep_ms;
        let steps = (ms / 100).max(1);
        for s in 0..steps {
            std::thread::sleep(std::time::Duration::from_millis(ms / steps));
            (ctx.progress)(crate::stage::Progress { done: s + 1, total: steps, message: String::new(), note: false });
        }
        if p.fail {
            return Err(StageError::failed(format!("node `{}` fails deliberately (fail = true)", ctx.id)));
        }
        ctx.out.put_json("value.json", &p.value)
    }
}
