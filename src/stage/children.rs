//! External programs that stages start (the `command` kind), so that an interrupted run stops them.
//!
//! Each program runs in a process group of its own, so that a shell and what it started are stopped together,
//! and a terminal's Ctrl-C reaches polyflow alone: the run then stops its programs itself ([`stop_all`]),
//! says what it stopped, and exits 130, instead of each program dying first and its node being recorded as
//! failed.

use std::collections::BTreeSet;
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Process group ids of the programs running now, and whether the run is stopping (then nothing new starts).
static RUNNING: Mutex<(BTreeSet<i32>, bool)> = Mutex::new((BTreeSet::new(), false));

/// A started program; unregistered when waited for.
pub struct Program {
    child: Child,
    pgid: i32,
}

/// Starts `cmd` in a process group of its own and registers it; refused once [`stop_all`] has begun. On Linux the
/// program is also sent SIGTERM if polyflow dies without stopping it (a second Ctrl-C, a lost terminal, a kill).
pub fn spawn(cmd: &mut Command) -> std::io::Result<Program> {
    use std::os::unix::process::CommandExt;
    // Held across the start, so that a stop either sees the program or keeps it from starting.
    let mut running = RUNNING.lock().unwrap();
    if running.1 {
        return Err(std::io::Error::other("the run is stopping"));
    }
    #[cfg(target_os = "linux")]
    // SAFETY: between fork and exec only async-signal-safe calls: prctl and getppid. The parent died before
    // prctl took effect when the child was reparented already; it ends itself then.
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 || libc::getppid() != parent {
                libc::raise(libc::SIGTERM);
            }
            Ok(())
        });
    }
    let child = cmd.process_group(0).spawn()?;
    let pgid = child.id() as i32;
    running.0.insert(pgid);
    Ok(Program { child, pgid })
}

impl Program {
    /// Waits for the program to end.
    pub fn wait(mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait();
        RUNNING.lock().unwrap().0.remove(&self.pgid);
        status
    }
}

/// Sends SIGTERM to every running program's process group, then SIGKILL to the groups still there after
/// `grace`. Returns how many groups were signalled.
pub fn stop_all(grace: Duration) -> usize {
    let groups: Vec<i32> = {
        let mut running = RUNNING.lock().unwrap();
        running.1 = true;
        running.0.iter().copied().collect()
    };
    for &g in &groups {
        // SAFETY: killpg only sends a signal; a group that has ended meanwhile gives ESRCH, which is fine.
        unsafe { libc::killpg(g, libc::SIGTERM) };
    }
    let until = Instant::now() + grace;
    // A group has ended when signal 0 finds no process in it.
    // SAFETY: as above; signal 0 checks for existence only.
    let alive = |g: i32| unsafe { libc::killpg(g, 0) } == 0;
    while Instant::now() < until && groups.iter().any(|&g| alive(g)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &g in groups.iter().filter(|&&g| alive(g)) {
        // SAFETY: as above.
        unsafe { libc::killpg(g, libc::SIGKILL) };
    }
    groups.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_and_what_it_started_stop_together() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let p = spawn(Command::new("sh").args(["-c", &script])).unwrap();
        let t = Instant::now();
        while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            assert!(t.elapsed() < Duration::from_secs(10), "the shell did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let sleeper: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(stop_all(Duration::from_secs(5)) >= 1);
        let status = p.wait().unwrap();
        assert!(!status.success());
        // Gone, or a zombie waiting for whoever adopted it to reap it.
        let running = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
        };
        let t = Instant::now();
        while running(sleeper) {
            assert!(t.elapsed() < Duration::from_secs(5), "the shell's child outlived the stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(RUNNING.lock().unwrap().0.is_empty());
        // Stopping: nothing new starts.
        assert!(spawn(&mut Command::new("true")).is_err());
        RUNNING.lock().unwrap().1 = false;
    }
}
