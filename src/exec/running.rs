//! What a run is doing now, for `status` in another process: `running.json` in the store root names the run's
//! process and the nodes it is computing or fetching, rewritten (atomically) whenever one starts or ends.
//! `status` trusts it only while that process lives; a killed run's file says nothing.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One node in flight.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InFlight {
    /// When it started (seconds since the Unix epoch).
    pub since: u64,
    /// Copied from the shared cache rather than computed.
    pub fetch: bool,
}

/// The file's content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Running {
    /// The run's process.
    pub pid: u32,
    /// That process's start time (`/proc/PID/stat`, clock ticks after boot): a later process given the same pid
    /// is not the run.
    #[serde(default)]
    pub start: u64,
    /// Node id → what it is doing.
    pub nodes: BTreeMap<String, InFlight>,
}

fn path(root: &Path) -> PathBuf {
    root.join("running.json")
}

/// Writes what the run in this process has in flight (best effort: it only informs `status`).
pub fn write(root: &Path, nodes: BTreeMap<String, InFlight>) {
    let pid = std::process::id();
    let r = Running { pid, start: start_time(pid).unwrap_or(0), nodes };
    let Ok(mut tmp) = crate::store::temp_file_in(&root.join("tmp")) else { return };
    if std::io::Write::write_all(&mut tmp, &serde_json::to_vec(&r).expect("json")).is_ok() {
        let _ = tmp.persist(path(root));
    }
}

/// Removes the file when it is this process's (the run ended).
pub fn clear(root: &Path) {
    if read_any(root).is_some_and(|r| r.pid == std::process::id()) {
        let _ = std::fs::remove_file(path(root));
    }
}

fn read_any(root: &Path) -> Option<Running> {
    serde_json::from_slice(&std::fs::read(path(root)).ok()?).ok()
}

/// What another process's run has in flight, while that process lives.
pub fn read(root: &Path) -> Option<Running> {
    let r = read_any(root)?;
    (r.pid != std::process::id() && start_time(r.pid) == Some(r.start)).then_some(r)
}

/// When process `pid` started (`/proc/PID/stat`'s 22nd field, after the parenthesised command name); `None`
/// when it does not exist.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// The run that holds the store, as its `writer.info` names it (`pid 4242 (polyflow run …) since unix time …`),
/// while that process lives and is not this one: for a run that writes no `running.json` (an earlier polyflow).
pub fn holder(root: &Path) -> Option<String> {
    let info = std::fs::read_to_string(root.join("writer.info")).ok()?;
    let pid: u32 = info.strip_prefix("pid ")?.split_whitespace().next()?.parse().ok()?;
    (pid != std::process::id() && start_time(pid).is_some()).then(|| info.trim().to_string())
}

/// "running for 3m 20s in pid 4242" (or "being fetched …").
pub fn describe(f: &InFlight, pid: u32) -> String {
    let now = crate::text::now_secs();
    let secs = now.saturating_sub(f.since);
    let age = if secs >= 3600 {
        format!("{}h {}m", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{}m {}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    };
    let what = if f.fetch { "being fetched from the shared cache" } else { "running" };
    format!("{what} for {age} in the run of pid {pid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_live_process_is_read_this_one_and_dead_ones_not() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("tmp")).unwrap();
        let n = BTreeMap::from([("a".to_string(), InFlight { since: 1, fetch: false })]);
        write(d.path(), n.clone());
        // This process's own run is not "another run".
        assert_eq!(read(d.path()), None);
        // Another live process (pid 1 always lives), with its start time.
        let start = start_time(1).unwrap();
        std::fs::write(path(d.path()), serde_json::to_vec(&Running { pid: 1, start, nodes: n.clone() }).unwrap()).unwrap();
        assert_eq!(read(d.path()).map(|r| r.nodes), Some(n.clone()));
        // The same pid started at another time is another process: not the run.
        std::fs::write(path(d.path()), serde_json::to_vec(&Running { pid: 1, start: start + 1, nodes: n.clone() }).unwrap()).unwrap();
        assert_eq!(read(d.path()), None);
        std::fs::write(path(d.path()), serde_json::to_vec(&Running { pid: 1, start, nodes: n.clone() }).unwrap()).unwrap();
        clear(d.path());
        assert!(path(d.path()).exists(), "another process's file stays");
        // A pid that is not alive: nothing.
        std::fs::write(path(d.path()), serde_json::to_vec(&Running { pid: u32::MAX - 1, start, nodes: n }).unwrap()).unwrap();
        assert_eq!(read(d.path()), None);
        assert!(describe(&InFlight { since: 0, fetch: false }, 7).starts_with("running for "));
    }
}
