//! Jobs still pending or running in Slurm for the store's nodes, read from the submissions recorded in the
//! store (`jobs/<key>/slurm.json`), for `status`, `show` and the start of a run: a job of a node's current key
//! (which a Slurm run re-attaches to, and which a local run would duplicate), and jobs of earlier settings that
//! an interrupted run left running (`--keep-jobs`) and that nothing will ever collect.

use super::job::{read_json, Submission};
use super::sched::{self, JobState};
use std::collections::BTreeMap;
use std::path::Path;

/// A recorded submission and what Slurm says of it now.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// The submission (job id, node, key, time).
    pub sub: Submission,
    /// Its state, when Slurm still knows it and it has not ended.
    pub state: Result<JobState, String>,
}

impl InFlight {
    /// `Slurm job 12 (RUNNING)`, `Slurm job 12 (PENDING: JobHeldUser)`, or why its state is unknown.
    pub fn describe(&self) -> String {
        match &self.state {
            Ok(s) => format!("Slurm job {} ({})", self.sub.job_id, s.describe()),
            Err(e) => format!("Slurm job {} (state unknown: {e})", self.sub.job_id),
        }
    }
}

/// Every recorded submission of the nodes `ids` (all nodes when `None`) whose job has not ended, by node id:
/// one `squeue` call for all of them, none when the store records no submission (a store only ever run
/// locally asks nothing of Slurm). When Slurm cannot be asked, each submission is returned with the error.
pub fn in_flight(store_root: &Path, ids: Option<&std::collections::BTreeSet<String>>) -> BTreeMap<String, Vec<InFlight>> {
    let mut subs: Vec<Submission> = vec![];
    let jobs = crate::store::jobs_root(store_root);
    for e in std::fs::read_dir(&jobs).into_iter().flatten().flatten() {
        if let Some(s) = read_json::<Submission>(&e.path(), "slurm.json") {
            if ids.is_none_or(|ids| ids.contains(&s.node)) {
                subs.push(s);
            }
        }
    }
    let mut out: BTreeMap<String, Vec<InFlight>> = BTreeMap::new();
    if subs.is_empty() {
        return out;
    }
    let job_ids: Vec<&str> = subs.iter().map(|s| s.job_id.as_str()).collect();
    match sched::squeue(&job_ids) {
        Ok(states) => {
            for s in subs {
                if let Some(st) = states.get(&s.job_id).filter(|st| !st.terminal()) {
                    out.entry(s.node.clone()).or_default().push(InFlight { state: Ok(st.clone()), sub: s });
                }
            }
        }
        Err(e) => {
            // Slurm could not be asked: say so rather than report the jobs gone (or never submitted).
            let e = e.lines().next().unwrap_or("").to_string();
            for s in subs {
                out.entry(s.node.clone()).or_default().push(InFlight { state: Err(format!("Slurm could not be asked: {e}")), sub: s });
            }
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|f| f.sub.submitted_at);
    }
    out
}

/// The message for a job of a node's earlier settings (not its current key): it computes what nobody will
/// collect.
pub fn leftover(f: &InFlight) -> String {
    format!(
        "{} of earlier settings (key {}…) is still in Slurm, and nothing will collect its result: `scancel {}` stops it",
        f.describe(),
        &f.sub.key[..12.min(f.sub.key.len())],
        f.sub.job_id
    )
}
