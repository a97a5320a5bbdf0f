//! Jobs still pending or running in Slurm for the store's nodes, read from the submissions recorded in the
//! store (`jobs/<key>/slurm.json`), for `status`, `show` and the start of a run: a job of a node's current key
//! (which a Slurm run re-attaches to, and which a local run would duplicate), and jobs of earlier settings that
//! an interrupted run left running (`--keep-jobs`) and that nothing will ever collect.

use super::job::{read_json, Submission};
use super::sched::{self, JobState};
use std::collections::BTreeMap;
use std::path::Path;

/// A recorded submission whose job Slurm reports pending or running.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// The submission (job id, node, key, time).
    pub sub: Submission,
    /// Its folder (`jobs/<key>`, or `jobs/<key>.<job id>` for an earlier attempt): its logs are there.
    pub dir: std::path::PathBuf,
    /// Its state.
    pub state: JobState,
}

impl InFlight {
    /// `Slurm job 12 (RUNNING)`, `Slurm job 12 (PENDING: JobHeldUser)`.
    pub fn describe(&self) -> String {
        format!("Slurm job {} ({})", self.sub.job_id, self.state.describe())
    }

    /// Whether it computes settings its node no longer has: `key` is the node's key now, `None` while that
    /// waits on its inputs (then the job may be of the settings it will have, and is not called left over).
    pub fn is_leftover(&self, key: Option<&str>) -> bool {
        key.is_some_and(|k| k != self.sub.key)
    }
}

/// The jobs in flight of the nodes `ids` (all nodes when `None`), by node id, from the recorded submissions
/// whose job has not left its result or error: one `squeue` call for all of them, none when there is no such
/// submission (a store only ever run locally asks nothing of Slurm). A job counts only when Slurm reports it
/// pending or running under the name polyflow gave it (`<prefix>-<node>`: a job id Slurm has since reused for
/// another job is not it). `Err` when Slurm could not be asked, with the error and how many submissions
/// were left unknown.
pub fn in_flight(
    store_root: &Path,
    ids: Option<&std::collections::BTreeSet<String>>,
    prefix: &str,
) -> Result<BTreeMap<String, Vec<InFlight>>, (String, usize)> {
    let mut subs: Vec<(Submission, std::path::PathBuf)> = vec![];
    let jobs = crate::store::jobs_root(store_root);
    for e in std::fs::read_dir(&jobs).into_iter().flatten().flatten() {
        let dir = e.path();
        // A job that wrote its result or error has ended, whatever Slurm says.
        if dir.join("result.json").exists() || dir.join("error.json").exists() {
            continue;
        }
        if let Some(s) = read_json::<Submission>(&dir, "slurm.json") {
            if ids.is_none_or(|ids| ids.contains(&s.node)) {
                subs.push((s, dir));
            }
        }
    }
    let mut out: BTreeMap<String, Vec<InFlight>> = BTreeMap::new();
    if subs.is_empty() {
        return Ok(out);
    }
    let job_ids: Vec<&str> = subs.iter().map(|(s, _)| s.job_id.as_str()).collect();
    let states = sched::squeue(&job_ids).map_err(|e| (e.lines().next().unwrap_or("").to_string(), subs.len()))?;
    for (sub, dir) in subs {
        let name = format!("{prefix}-{}", sub.node);
        if let Some(st) = states.get(&sub.job_id).filter(|st| !st.terminal() && (st.name.is_empty() || st.name == name)) {
            out.entry(sub.node.clone()).or_default().push(InFlight { state: st.clone(), sub, dir });
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|f| f.sub.submitted_at);
    }
    Ok(out)
}

/// The note for a store whose recorded jobs Slurm could not be asked about.
pub fn unknown(e: &(String, usize)) -> String {
    format!("the state of {} this store submitted is unknown: Slurm could not be asked ({})", crate::text::count(e.1, "Slurm job"), e.0)
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
