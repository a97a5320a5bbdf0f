//! What a node asks of the machine that runs it (`resources = { … }`), and the `[executor]` table.
//!
//! Neither is part of a node's cache key: where and with how much a node runs does not change its result.
//! Both are parsed here, with spans, so a typo is an error naming the file, line and column before anything
//! runs; executors (local or Slurm) read the parsed values.

use super::error::suggest;
use super::{Entry, SValue, SourceMap, SpecError, SpecErrorKind as K, Value};
use std::collections::BTreeMap;

/// The resources of one node. Unset fields fall back to the executor's defaults, then to the node kind's.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeResources {
    /// CPU cores (`--cpus-per-task` on Slurm; CPU slots of `-j` locally).
    pub cpus: Option<u32>,
    /// GPUs (`--gres=gpu:N` on Slurm; an accelerator slot locally when > 0).
    pub gpus: Option<u32>,
    /// Memory, Slurm syntax (`16G`, `500M`).
    pub mem: Option<String>,
    /// Time limit, Slurm syntax (`30`, `2:00:00`, `1-00:00:00`).
    pub time: Option<String>,
    /// Slurm partition.
    pub partition: Option<String>,
    /// Extra `sbatch` options, appended as given (e.g. `["--qos=high", "--constraint=a100"]`).
    pub sbatch: Vec<String>,
    /// Attempts after a failed one (Snakemake's `retries`): a node whose work failed (its program exited with an
    /// error, was killed, its job ended on a lost or preempted machine) is started again, up to this many times,
    /// resuming from its checkpoint (a training node's, a command's `$POLYFLOW_SCRATCH`). Bad input and a full
    /// disk are not retried: they fail the same way again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

impl NodeResources {
    /// `self` with unset fields taken from `base`; `sbatch` options are concatenated (base first).
    pub fn over(&self, base: &NodeResources) -> NodeResources {
        NodeResources {
            cpus: self.cpus.or(base.cpus),
            gpus: self.gpus.or(base.gpus),
            mem: self.mem.clone().or_else(|| base.mem.clone()),
            time: self.time.clone().or_else(|| base.time.clone()),
            partition: self.partition.clone().or_else(|| base.partition.clone()),
            sbatch: base.sbatch.iter().chain(&self.sbatch).cloned().collect(),
            retries: self.retries.or(base.retries),
        }
    }
}

/// Which executor runs the stale nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// Threads of this process.
    #[default]
    Local,
    /// One Slurm job per node, submitted with `sbatch`.
    Slurm,
}

/// What the coordinator does with its submitted jobs when it is interrupted (Ctrl-C).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInterrupt {
    /// `scancel` them.
    #[default]
    Cancel,
    /// Leave them running; the next `run` re-attaches to them.
    Keep,
}

/// The parsed `[executor]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutorSpec {
    /// Which executor (`kind = "local" | "slurm"`).
    pub kind: ExecutorKind,
    /// Defaults for every node's resources (`cpus`, `gpus`, `mem`, `time`, `partition`, `sbatch`, `retries`).
    pub defaults: NodeResources,
    /// Seconds between two polls of the scheduler (`poll`, default 1).
    pub poll_s: f64,
    /// `on_interrupt = "cancel" | "keep"`.
    pub on_interrupt: OnInterrupt,
    /// Prefix of job names (`job_prefix`, default `pf`).
    pub job_prefix: String,
}

impl Default for ExecutorSpec {
    fn default() -> Self {
        ExecutorSpec {
            kind: ExecutorKind::Local,
            defaults: NodeResources::default(),
            poll_s: 1.0,
            on_interrupt: OnInterrupt::Cancel,
            job_prefix: "pf".into(),
        }
    }
}

const RESOURCE_KEYS: &[&str] = &["cpus", "gpus", "mem", "time", "partition", "sbatch", "retries"];
const EXECUTOR_KEYS: &[&str] =
    &["kind", "cpus", "gpus", "mem", "time", "partition", "sbatch", "retries", "poll", "on_interrupt", "job_prefix"];

/// The most attempts after a failed one that `retries` may ask for.
pub const MAX_RETRIES: u32 = 10;

fn wrong(src: &SourceMap, v: &SValue, expected: &str) -> SpecError {
    SpecError::at(src, v.span, K::WrongType, format!("expected {expected}, found {}", v.value.type_name()))
        .help(format!("write {expected} here"))
}

fn count(src: &SourceMap, v: &SValue) -> Result<u32, SpecError> {
    match v.value {
        Value::Int(i) if (0..=1_000_000).contains(&i) => Ok(i as u32),
        // A whole float, as wherever an integer is read (`cpus = 4.0`).
        Value::Float(f) if f.fract() == 0.0 && (0.0..=1e6).contains(&f) => Ok(f as u32),
        Value::Int(_) => Err(SpecError::at(src, v.span, K::OutOfRange, "out of range").help("give a count ≥ 0")),
        _ => Err(wrong(src, v, "an integer")),
    }
}

fn string(src: &SourceMap, v: &SValue, what: &str) -> Result<String, SpecError> {
    match &v.value {
        Value::Str(s) if !s.trim().is_empty() && !s.contains(char::is_whitespace) => Ok(s.clone()),
        Value::Str(_) => Err(SpecError::at(src, v.span, K::OutOfRange, format!("`{}` is not a valid {what}", v.to_json()))
            .help(format!("write a {what} without spaces"))),
        _ => Err(wrong(src, v, &format!("a {what} string"))),
    }
}

fn mem(src: &SourceMap, v: &SValue) -> Result<String, SpecError> {
    let s = match &v.value {
        Value::Str(s) => s.clone(),
        _ => return Err(wrong(src, v, "a memory size string")),
    };
    let digits = s.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) || s.len() - digits.len() > 1 {
        return Err(SpecError::at(src, v.span, K::OutOfRange, format!("`{s}` is not a memory size"))
            .help("write a size in Slurm's syntax, e.g. \"16G\" or \"500M\""));
    }
    Ok(s)
}

fn time(src: &SourceMap, v: &SValue) -> Result<String, SpecError> {
    let s = match &v.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) if *i > 0 => i.to_string(),
        _ => return Err(wrong(src, v, "a time limit string")),
    };
    let ok = s.split(['-', ':']).all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) && s.matches('-').count() <= 1;
    if !ok {
        return Err(SpecError::at(src, v.span, K::OutOfRange, format!("`{s}` is not a time limit"))
            .help("write minutes or Slurm's [D-]HH:MM:SS, e.g. \"30\", \"2:00:00\", \"1-00:00:00\""));
    }
    Ok(s)
}

fn field(src: &SourceMap, r: &mut NodeResources, k: &str, e: &Entry) -> Result<(), SpecError> {
    let v = &e.value;
    match k {
        "cpus" => {
            let n = count(src, v)?;
            if n == 0 {
                return Err(SpecError::at(src, v.span, K::OutOfRange, "`cpus = 0`: a node runs on at least one CPU")
                    .help("give a count ≥ 1 (leave `cpus` out for 1)"));
            }
            r.cpus = Some(n)
        }
        "gpus" => r.gpus = Some(count(src, v)?),
        "retries" => {
            let n = count(src, v)?;
            if n > MAX_RETRIES {
                return Err(SpecError::at(src, v.span, K::OutOfRange, format!("`retries = {n}`: at most {MAX_RETRIES}"))
                    .help("a node that fails this often fails for a reason: look at its last lines (`polyflow status`)"));
            }
            r.retries = Some(n)
        }
        "mem" => r.mem = Some(mem(src, v)?),
        "time" => r.time = Some(time(src, v)?),
        "partition" => r.partition = Some(string(src, v, "partition name")?),
        "sbatch" => {
            let Value::Array(items) = &v.value else {
                return Err(wrong(src, v, "an array of sbatch options, e.g. [\"--qos=high\"]"));
            };
            for it in items {
                match it.as_str() {
                    Some(s) if s.starts_with('-') => {
                        if let Some((opt, why)) = owned_option(s) {
                            return Err(SpecError::at(src, it.span, K::OutOfRange, format!("`{opt}` is not for a polyflow job: {why}"))
                                .help("leave it out"));
                        }
                        r.sbatch.push(s.to_string())
                    }
                    Some(_) => {
                        return Err(SpecError::at(src, it.span, K::OutOfRange, "an sbatch option starts with `-`")
                            .help("write options as sbatch takes them, e.g. \"--qos=high\""))
                    }
                    None => return Err(wrong(src, it, "a string")),
                }
            }
        }
        _ => unreachable!("checked by the caller"),
    }
    Ok(())
}

/// The `sbatch` options polyflow sets for every job itself, or that would defeat how it submits, which a
/// pipeline's list must not hold: the option as written and why. Long options are matched as sbatch matches
/// them, by any abbreviation of three letters or more (`--out=x` is `--output`). `None` for any other option.
fn owned_option(s: &str) -> Option<(&str, &'static str)> {
    let name = s.split_once('=').map_or(s, |(n, _)| n);
    // Short options may carry their value attached (`-oout.log`).
    let short = |c: &str| name == c || (name.starts_with(c) && !name.starts_with("--"));
    let long = |full: &str| name.len() >= 5 && name.starts_with("--") && full.starts_with(name);
    let why = if long("--output") || short("-o") || long("--error") || short("-e") {
        "the job's logs go to its folder in the store, where `status`, `show` and a failure's last lines read them"
    } else if long("--chdir") || long("--workdir") || short("-D") {
        "jobs run in the folder `polyflow run` ran in, where the pipeline's relative paths resolve"
    } else if long("--wrap") || long("--parsable") || long("--test-only") {
        "polyflow submits its own job script, reads the job id and tests the options itself"
    } else if name == "--wait" || short("-W") {
        "sbatch would block until the job ends: polyflow would submit one job at a time and not hear Ctrl-C"
    } else {
        return None;
    };
    Some((name, why))
}

/// Parses a node's `resources = { … }` table.
pub fn parse_resources(src: &SourceMap, e: Option<&Entry>) -> Result<NodeResources, SpecError> {
    let mut r = NodeResources::default();
    let Some(e) = e else { return Ok(r) };
    let Some(t) = e.value.as_table() else {
        return Err(wrong(src, &e.value, "a table, e.g. `resources = { cpus = 4, mem = \"16G\", time = \"2:00:00\" }`"));
    };
    for (k, fe) in t {
        if !RESOURCE_KEYS.contains(&k.as_str()) {
            return Err(SpecError::at(src, fe.key_span, K::UnknownKey, format!("unknown resource `{k}`"))
                .help(suggest(k, RESOURCE_KEYS.iter().copied())));
        }
        field(src, &mut r, k, fe)?;
    }
    Ok(r)
}

/// Parses the `[executor]` table (already merged over includes and the profile).
pub fn parse_executor(src: &SourceMap, t: &BTreeMap<String, Entry>) -> Result<ExecutorSpec, SpecError> {
    let mut x = ExecutorSpec::default();
    for (k, e) in t {
        match k.as_str() {
            "kind" => {
                x.kind = match e.value.as_str() {
                    Some("local") => ExecutorKind::Local,
                    Some("slurm") => ExecutorKind::Slurm,
                    Some(other) => {
                        return Err(SpecError::at(src, e.value.span, K::OutOfRange, format!("unknown executor `{other}`"))
                            .help("use \"local\" or \"slurm\""))
                    }
                    None => return Err(wrong(src, &e.value, "a string")),
                }
            }
            "poll" => {
                x.poll_s = match e.value.value {
                    Value::Int(i) => i as f64,
                    Value::Float(f) => f,
                    _ => return Err(wrong(src, &e.value, "a number of seconds")),
                };
                if !(0.05..=600.0).contains(&x.poll_s) {
                    return Err(SpecError::at(src, e.value.span, K::OutOfRange, "poll interval out of range")
                        .help("give seconds between 0.05 and 600"));
                }
            }
            "on_interrupt" => {
                x.on_interrupt = match e.value.as_str() {
                    Some("cancel") => OnInterrupt::Cancel,
                    Some("keep") => OnInterrupt::Keep,
                    _ => {
                        return Err(SpecError::at(src, e.value.span, K::OutOfRange, "on_interrupt must be \"cancel\" or \"keep\"")
                            .help("\"cancel\" scancels the submitted jobs on Ctrl-C; \"keep\" leaves them for the next run"))
                    }
                }
            }
            "job_prefix" => x.job_prefix = string(src, &e.value, "job name prefix")?,
            k if RESOURCE_KEYS.contains(&k) => field(src, &mut x.defaults, k, e)?,
            _ => {
                return Err(SpecError::at(src, e.key_span, K::UnknownKey, format!("unknown key `{k}` in [executor]"))
                    .help(suggest(k, EXECUTOR_KEYS.iter().copied())))
            }
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use crate::spec::load_str;

    fn p(text: &str) -> crate::spec::Pipeline {
        load_str("p.toml", text, std::path::Path::new("."), None).unwrap()
    }

    #[test]
    fn resources_parse_and_stay_out_of_params() {
        let pl = p("[node.a]\nkind = \"value\"\nresources = { cpus = 4, mem = \"16G\", time = \"2:00:00\", sbatch = [\"--qos=x\"] }\n");
        let n = &pl.nodes[0];
        assert!(!n.params.contains_key("resources"));
        let r = super::parse_resources(&pl.sources, n.resources.as_ref()).unwrap();
        assert_eq!(r.cpus, Some(4));
        assert_eq!(r.mem.as_deref(), Some("16G"));
        assert_eq!(r.time.as_deref(), Some("2:00:00"));
        assert_eq!(r.sbatch, vec!["--qos=x".to_string()]);
    }

    #[test]
    fn options_polyflow_sets_are_refused_where_written() {
        for opt in ["--output=/tmp/x-%j.out", "-e", "-oslurm.log", "--chdir=/x", "--wrap=true", "--out=x", "--workdir=/x", "-W", "--wait"] {
            let pl = p(&format!("[node.a]\nkind = \"value\"\nresources = {{ sbatch = [\"--qos=x\", \"{opt}\"] }}\n"));
            let e = super::parse_resources(&pl.sources, pl.nodes[0].resources.as_ref()).unwrap_err().to_string();
            assert!(e.contains("p.toml:3:") && e.contains("is not for a polyflow job"), "{opt}: {e}");
        }
        // Options that merely start alike are not.
        for opt in [
            "--export=ALL",
            "--exclusive",
            "--dependency=afterok:1",
            "--exclude=n1",
            "-O",
            "-d",
            "--open-mode=append",
            "--wait-all-nodes=1",
        ] {
            assert!(super::owned_option(opt).is_none(), "{opt}");
        }
    }

    #[test]
    fn bad_resources_name_line_and_column() {
        let pl = p("[node.a]\nkind = \"value\"\nresources = { cpu = 4 }\n");
        let e = super::parse_resources(&pl.sources, pl.nodes[0].resources.as_ref()).unwrap_err().to_string();
        assert!(e.contains("p.toml:3:15") && e.contains("unknown resource `cpu`") && e.contains("cpus"), "{e}");
        let pl = p("[node.a]\nkind = \"value\"\nresources = { mem = \"lots\" }\n");
        let e = super::parse_resources(&pl.sources, pl.nodes[0].resources.as_ref()).unwrap_err().to_string();
        assert!(e.contains("not a memory size"), "{e}");
    }

    #[test]
    fn executor_table_profile_overrides() {
        let text = "[executor]\nkind = \"local\"\npartition = \"cpu\"\n[profile.hpc.executor]\nkind = \"slurm\"\ntime = \"1:00:00\"\n";
        let pl = load_str("p.toml", text, std::path::Path::new("."), Some("hpc")).unwrap();
        let x = super::parse_executor(&pl.sources, &pl.executor).unwrap();
        assert_eq!(x.kind, super::ExecutorKind::Slurm);
        assert_eq!(x.defaults.partition.as_deref(), Some("cpu"));
        assert_eq!(x.defaults.time.as_deref(), Some("1:00:00"));
        let pl = p("[executor]\nkind = \"k8s\"\n");
        let e = super::parse_executor(&pl.sources, &pl.executor).unwrap_err().to_string();
        assert!(e.contains("p.toml:2:8") && e.contains("unknown executor"), "{e}");
    }
}
