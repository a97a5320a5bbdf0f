//! The environment variables that choose CPU kernels. A value none of them reads is reported at start-up rather
//! than silently giving the default (a mistyped `POLYFLOW_SGEMM=avx512` would otherwise time the wrong kernel).

use crate::model::fused::{self, kernels};

/// Each variable, the values it accepts (the lists the code that reads it matches against), and what any other
/// value does.
const KNOBS: &[(&str, &[&str], &str)] = &[
    (kernels::sgemm::FORCE_VAR, &kernels::sgemm::FORCE_VALUES, "the CPU's default f32 kernel runs"),
    (kernels::bf16::FORCE_VAR, &kernels::bf16::FORCE_VALUES, "the CPU's default bf16 kernel runs"),
    (fused::SWITCH_VAR, &fused::SWITCH_VALUES, "the fused CPU block stays on (only `0` turns it off)"),
];

/// One warning per knob set (through `get`) to a value it does not accept, naming the accepted values.
pub fn unknown_values(get: impl Fn(&str) -> Option<String>) -> Vec<String> {
    KNOBS
        .iter()
        .filter_map(|(var, ok, otherwise)| {
            let v = get(var)?;
            (!ok.contains(&v.as_str())).then(|| format!("{var}={v} is not one of {}: {otherwise}", ok.join(", ")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_knob_values_are_named_with_the_accepted_ones() {
        let env = |k: &str| match k {
            "POLYFLOW_SGEMM" => Some("avx512".to_string()),
            "POLYFLOW_BF16" => Some("emulate".to_string()),
            "POLYFLOW_FUSED_CPU" => Some("false".to_string()),
            _ => None,
        };
        let w = unknown_values(env);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("POLYFLOW_SGEMM=avx512 is not one of avx2, avx512-12x32, avx512-8x48"), "{}", w[0]);
        assert!(w[1].contains("POLYFLOW_FUSED_CPU=false") && w[1].contains("stays on"), "{}", w[1]);
        assert!(unknown_values(|_| None).is_empty());
    }
}
