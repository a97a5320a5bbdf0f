//! Slurm's client commands (`sbatch`, `squeue`, `scontrol`, `sacct`, `scancel`), run as processes and parsed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// A job's state as Slurm reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    /// `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, `TIMEOUT`, …
    pub state: String,
    /// Slurm's reason field (`None` when there is none).
    pub reason: String,
    /// `ExitCode=code:signal`, when known.
    pub exit_code: Option<String>,
    /// The job's name (`squeue` only; empty otherwise): polyflow names its jobs `<job_prefix>-<node>`.
    pub name: String,
}

impl JobState {
    /// The state, with Slurm's reason where it gives one: `RUNNING`, `PENDING: JobHeldUser`.
    pub fn describe(&self) -> String {
        match self.reason.as_str() {
            "" | "None" => self.state.clone(),
            r => format!("{}: {r}", self.state),
        }
    }

    /// Whether the job has ended (successfully or not).
    pub fn terminal(&self) -> bool {
        is_terminal(&self.state)
    }
}

/// Whether `state` is one in which the job will not run any more.
pub fn is_terminal(state: &str) -> bool {
    // `CANCELLED by 0` is how scontrol may spell it.
    let s = state.split_whitespace().next().unwrap_or("");
    matches!(
        s,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "PREEMPTED"
            | "NODE_FAIL"
            | "OUT_OF_MEMORY"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "REVOKED"
    )
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let name = cmd.get_program().to_string_lossy().to_string();
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("`{name}` not found: the Slurm executor needs Slurm's client commands on PATH (and SLURM_CONF when the configuration is not in /etc/slurm)")
        } else {
            format!("`{name}`: {e}")
        }
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(format!("`{name}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Submits `script` with `args`; returns the job id.
pub fn sbatch(args: &[String], script: &Path) -> Result<String, String> {
    let out = run(Command::new("sbatch").arg("--parsable").args(args).arg(script))?;
    let id = out.trim().split(';').next().unwrap_or("").trim().to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return Err(format!("sbatch printed no job id: {out:?}"));
    }
    Ok(id)
}

/// Asks Slurm whether a job with `args` would be accepted, without submitting one (`sbatch --test-only`):
/// the error sbatch gives otherwise (an unknown partition or option, a time above the partition's limit).
pub fn test_only(args: &[String]) -> Result<(), String> {
    run(Command::new("sbatch").arg("--test-only").args(args).arg("--wrap=true")).map(|_| ())
}

/// The states of the given jobs that `squeue` still knows (ended jobs stay known for `MinJobAge` seconds).
pub fn squeue(ids: &[&str]) -> Result<BTreeMap<String, JobState>, String> {
    let mut m = BTreeMap::new();
    if ids.is_empty() {
        return Ok(m);
    }
    let out = match run(Command::new("squeue").args(["-h", "--states=all", "-o", "%i|%T|%j|%r", "-j", &ids.join(",")])) {
        Ok(o) => o,
        // Every id unknown: squeue exits 1 ("Invalid job id specified").
        Err(e) if e.contains("Invalid job id") => return Ok(m),
        Err(e) => return Err(e),
    };
    for line in out.lines() {
        // The name may hold `|`; the reason never does: split it off from the end.
        let mut p = line.splitn(3, '|');
        if let (Some(id), Some(st), Some(rest)) = (p.next(), p.next(), p.next()) {
            let (name, r) = rest.rsplit_once('|').unwrap_or(("", rest));
            let st = JobState { state: st.trim().into(), reason: r.trim().into(), exit_code: None, name: name.trim().into() };
            m.insert(id.trim().to_string(), st);
        }
    }
    Ok(m)
}

/// `scontrol show job -o ID`: state, reason and exit code; `None` when Slurm no longer knows the job.
pub fn scontrol(id: &str) -> Option<JobState> {
    let out = run(Command::new("scontrol").args(["show", "job", "-o", id])).ok()?;
    let field = |k: &str| out.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}="))).map(|s| s.to_string());
    Some(JobState {
        state: field("JobState")?,
        reason: field("Reason").unwrap_or_else(|| "None".into()),
        exit_code: field("ExitCode"),
        name: String::new(),
    })
}

/// `sacct` (only where accounting is configured): state and exit code of a job Slurm's controller forgot.
pub fn sacct(id: &str) -> Option<JobState> {
    let out = run(Command::new("sacct").args(["-n", "-X", "-P", "-o", "JobID,State,ExitCode,Reason", "-j", id])).ok()?;
    let line = out.lines().find(|l| l.split('|').next() == Some(id))?;
    let p: Vec<&str> = line.split('|').collect();
    Some(JobState {
        state: p.get(1)?.to_string(),
        exit_code: p.get(2).map(|s| s.to_string()),
        reason: p.get(3).map(|s| s.to_string()).unwrap_or_else(|| "None".into()),
        name: String::new(),
    })
}

/// Asks Slurm to cancel the jobs.
pub fn scancel(ids: &[&str]) -> Result<(), String> {
    if ids.is_empty() {
        return Ok(());
    }
    run(Command::new("scancel").args(ids)).map(|_| ())
}

#[cfg(test)]
mod tests {
    #[test]
    fn terminal_states() {
        assert!(super::is_terminal("COMPLETED"));
        assert!(super::is_terminal("CANCELLED by 0"));
        assert!(!super::is_terminal("RUNNING"));
        assert!(!super::is_terminal("COMPLETING"));
        assert!(!super::is_terminal("PENDING"));
    }
}
