//! External programs that stages start (the `command` kind), so that an interrupted run stops them.
//!
//! Each program runs in a process group of its own, so that a shell and what it started are stopped together,
//! and a terminal's Ctrl-C reaches polyflow alone: the run then stops its programs itself ([`stop_all`]),
//! says what it stopped, and exits 130, instead of each program dying first and its node being recorded as
//! failed.
//!
//! On Linux a small guardian process leads each group: the program is its child, and when polyflow dies
//! without stopping it (`kill -9`, the OOM killer, a job's time limit) the guardian stops the whole group —
//! SIGTERM, then SIGKILL after [`ORPHAN_GRACE`] — so no shell's grandchild (a training script holding a GPU)
//! runs on unattended. The guardian is a subreaper: what left the group (`setsid`, a daemon's double fork) is
//! adopted by it when its parent ends, and stopped with the group. When the program ends, the guardian kills
//! what it left running (see [`Program::wait`]). The guardian is forked between fork and exec, uses only
//! async-signal-safe calls, and ends as its program did (its exit code, or the same signal), which is what
//! polyflow then sees.

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
    /// The reading end of the guardian's note (Linux).
    note: Option<std::fs::File>,
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
    // The guardian's note of what the program left running (a byte written before it ends).
    #[cfg(target_os = "linux")]
    let note = {
        use std::os::fd::FromRawFd;
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`, which are then owned here.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above: fresh descriptors, owned once.
        unsafe { (std::fs::File::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1])) }
    };
    #[cfg(target_os = "linux")]
    // SAFETY: between fork and exec only async-signal-safe calls (see `guard`).
    unsafe {
        use std::os::fd::AsRawFd;
        let parent = libc::getpid();
        let w = note.1.as_raw_fd();
        cmd.pre_exec(move || guard(parent, w));
    }
    let child = cmd.process_group(0).spawn()?;
    let pgid = child.id() as i32;
    running.0.insert(pgid);
    #[cfg(target_os = "linux")]
    let note = {
        // This process's copy of the writing end: closed, so that the read sees the end once the guardian has.
        drop(note.1);
        Some(note.0)
    };
    #[cfg(not(target_os = "linux"))]
    let note = None;
    Ok(Program { child, pgid, note })
}

/// How long a guardian whose polyflow died waits after SIGTERM before it kills its program's group.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(5);

/// Set by the guardian's signal handler when polyflow has died.
#[cfg(target_os = "linux")]
static ORPHANED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// polyflow's pid, as the guardian's handler compares it with its parent's.
#[cfg(target_os = "linux")]
static POLYFLOW: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// A SIGUSR1 is polyflow's death only when polyflow is no longer the parent: the same signal sent to the group
/// (a program's own "checkpoint now") is the program's, and the guardian lets it be.
#[cfg(target_os = "linux")]
extern "C" fn on_parent_death(_: libc::c_int) {
    // SAFETY: getppid is async-signal-safe.
    if unsafe { libc::getppid() } != POLYFLOW.load(std::sync::atomic::Ordering::SeqCst) {
        ORPHANED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs in the child between fork and exec (process group already its own). Forks again: the grandchild returns
/// to exec the program; this process becomes its guardian and never returns. Only async-signal-safe calls.
///
/// # Safety
/// Called only as a `pre_exec` hook.
#[cfg(target_os = "linux")]
unsafe fn guard(parent: libc::pid_t, note: libc::c_int) -> std::io::Result<()> {
    // What the program starts and leaves to end on its own (a `setsid` daemon, a double fork) is adopted by the
    // guardian, not by init, so that it can be found and stopped. Set before the fork: not inherited.
    libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
    let program = libc::fork();
    if program < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if program == 0 {
        // The program: ended with its guardian if that is killed alone.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        return Ok(());
    }
    // The guardian. Closes what it inherited, among them the pipe through which the parent learns whether the
    // exec succeeded (it hears it from the program's side alone) and the program's output pipes.
    // All but the note.
    let note = note as u32;
    let below = note == 0 || libc::syscall(libc::SYS_close_range, 0u32, note - 1, 0u32) == 0;
    if !below || libc::syscall(libc::SYS_close_range, note + 1, u32::MAX, 0u32) != 0 {
        for fd in (0..4096).filter(|&fd| fd != note as libc::c_int) {
            libc::close(fd);
        }
    }
    let me = libc::getpid();
    // A stop of the group (SIGTERM, Ctrl-C, a hang-up) is the program's to handle: the guardian stays until it
    // ends. SIGKILL still ends both.
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE] {
        libc::signal(sig, libc::SIG_IGN);
    }
    // polyflow's death arrives as SIGUSR1 (no SA_RESTART: it interrupts the wait below).
    POLYFLOW.store(parent, std::sync::atomic::Ordering::SeqCst);
    let mut sa: libc::sigaction = std::mem::zeroed();
    sa.sa_sigaction = on_parent_death as *const () as usize;
    libc::sigemptyset(&mut sa.sa_mask);
    libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGUSR1) != 0 || libc::getppid() != parent {
        ORPHANED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let status;
    let mut deadline: Option<libc::timespec> = None;
    loop {
        let orphaned = ORPHANED.load(std::sync::atomic::Ordering::SeqCst);
        if orphaned && deadline.is_none() {
            libc::killpg(0, libc::SIGTERM);
            signal_ours(me, libc::SIGTERM);
            let mut now: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
            now.tv_sec += ORPHAN_GRACE.as_secs() as libc::time_t;
            deadline = Some(now);
        }
        // Any child: what it adopted is reaped as it ends (a program launching helpers would otherwise pile up
        // zombies under it until the end).
        let flags = if deadline.is_some() { libc::WNOHANG } else { 0 };
        let mut st = 0;
        let r = libc::waitpid(-1, &mut st, flags);
        if r == program {
            status = st;
            break;
        }
        if r > 0 {
            continue;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            libc::_exit(127);
        }
        if let Some(d) = deadline {
            let mut now: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
            if (now.tv_sec, now.tv_nsec) >= (d.tv_sec, d.tv_nsec) {
                // Ends this process too.
                kill_ours(me);
                libc::killpg(0, libc::SIGKILL);
            }
            let nap = libc::timespec { tv_sec: 0, tv_nsec: 20_000_000 };
            libc::nanosleep(&nap, std::ptr::null_mut());
        }
    }
    if deadline.is_some() {
        // The group's other processes (a shell's children) may outlive the program itself.
        kill_ours(me);
        libc::killpg(0, libc::SIGKILL);
    }
    // What the program left running: its group's other processes and what it adopted. Killed, and said through
    // the note. Every process still running below the program
    // has been adopted by now (its line of parents ends at the program, which has ended), so without a child
    // there is nothing to look for in `/proc` (the common case: one system call).
    let adopted = loop {
        let mut s = 0;
        match libc::waitpid(-1, &mut s, libc::WNOHANG) {
            0 => break true,
            r if r > 0 => continue,
            _ => break std::io::Error::last_os_error().raw_os_error() != Some(libc::ECHILD),
        }
    };
    if adopted && signal_ours(me, 0) > 0 {
        // At once: a process left running writes nothing more into the outputs about to be stored (a TERM trap
        // of its own would).
        kill_ours(me);
        libc::write(note as libc::c_int, b"L".as_ptr().cast(), 1);
    }
    // End as the program did.
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // No core file of the guardian's own.
        let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig);
    }
    libc::_exit(libc::WEXITSTATUS(status))
}

/// Milliseconds of the monotonic clock (async-signal-safe).
#[cfg(target_os = "linux")]
unsafe fn monotonic() -> i64 {
    let mut t: libc::timespec = std::mem::zeroed();
    libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t);
    t.tv_sec as i64 * 1_000 + t.tv_nsec as i64 / 1_000_000
}

/// Sends `sig` (0: none) to every live process other than `me` in process group `me` or whose parent is `me`
/// (what a subreaper adopted); returns how many there are. Reads `/proc` with raw system calls and buffers on the
/// stack only: it runs in the guardian, between fork and exec of a threaded process.
#[cfg(target_os = "linux")]
unsafe fn signal_ours(me: libc::pid_t, sig: libc::c_int) -> usize {
    let dir = libc::open(c"/proc".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
    if dir < 0 {
        return 0;
    }
    let mut count = 0;
    let mut buf = [0u8; 4096];
    loop {
        let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
        if n <= 0 {
            break;
        }
        let mut off = 0usize;
        // Each record: inode (8), offset (8), length (2), type (1), then the NUL-ended name.
        while off + 19 < n as usize {
            let len = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if len == 0 {
                break;
            }
            let name = &buf[off + 19..(off + len).min(n as usize)];
            off += len;
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if name.is_empty() || name.len() > 10 || !name.iter().all(u8::is_ascii_digit) {
                continue;
            }
            let pid = name.iter().fold(0i64, |a, &b| a * 10 + (b - b'0') as i64) as libc::pid_t;
            if pid == me {
                continue;
            }
            // "/proc/PID/stat\0"
            let mut path = [0u8; 32];
            let parts: [&[u8]; 3] = [b"/proc/", name, b"/stat\0"];
            let mut k = 0;
            for p in parts {
                path[k..k + p.len()].copy_from_slice(p);
                k += p.len();
            }
            let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                continue;
            }
            let mut st = [0u8; 512];
            let got = libc::read(fd, st.as_mut_ptr().cast(), st.len());
            libc::close(fd);
            if got <= 0 {
                continue;
            }
            // `PID (COMM) STATE PPID PGRP …`; COMM may hold spaces and parentheses: read after the last `)`.
            let st = &st[..got as usize];
            let Some(rp) = st.iter().rposition(|&b| b == b')') else { continue };
            let mut fields = st[rp + 1..].split(|&b| b == b' ').filter(|f| !f.is_empty());
            let (Some(state), Some(ppid), Some(pgrp)) = (fields.next(), fields.next(), fields.next()) else { continue };
            let num = |f: &[u8]| f.iter().fold(0i64, |a, &b| a * 10 + (b.wrapping_sub(b'0')) as i64) as libc::pid_t;
            if matches!(state, b"Z" | b"X") || (num(ppid) != me && num(pgrp) != me) {
                continue;
            }
            if sig != 0 {
                libc::kill(pid, sig);
            }
            count += 1;
        }
    }
    libc::close(dir);
    count
}

/// SIGKILLs every process of [`signal_ours`] until none is left, reaping what it adopted: one whose parent is
/// killed is adopted in turn and killed in the next round (at most 3 s: a process stuck in the kernel is left).
#[cfg(target_os = "linux")]
unsafe fn kill_ours(me: libc::pid_t) {
    let start = monotonic();
    while signal_ours(me, libc::SIGKILL) > 0 && monotonic() - start < 3_000 {
        let mut s = 0;
        while libc::waitpid(-1, &mut s, libc::WNOHANG) > 0 {}
        let nap = libc::timespec { tv_sec: 0, tv_nsec: 5_000_000 };
        libc::nanosleep(&nap, std::ptr::null_mut());
    }
    let mut s = 0;
    while libc::waitpid(-1, &mut s, libc::WNOHANG) > 0 {}
}

/// How long a program's group is waited for after SIGKILL of what it left (where no guardian killed it).
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// How a program ended.
pub struct Ended {
    /// Its exit status.
    pub status: ExitStatus,
    /// Whether processes it started were still running in its group when it ended (they were then stopped).
    pub leftovers: bool,
}

impl Program {
    /// Waits for the program to end; what it left running (a shell's `cmd &`, a `setsid` daemon) is killed at
    /// once (SIGKILL), by its guardian or else here. The node's work is done when its program is, and a process
    /// left behind would write on into files already moved into the store (and hold the output pipe open).
    pub fn wait(mut self) -> std::io::Result<Ended> {
        let status = self.child.wait();
        // The guardian stopped what the program left (its group, and what it adopted: a `setsid` daemon).
        let told = self.note.take().is_some_and(|mut f| {
            use std::io::Read;
            let mut b = [0u8; 1];
            f.read(&mut b).is_ok_and(|n| n == 1)
        });
        // SAFETY: killpg only sends a signal. The group id is still this program's: a group id is not reused
        // while a process is in the group.
        let signal = |sig| unsafe { libc::killpg(self.pgid, sig) };
        // Without a guardian (or one killed), the group's processes are stopped here.
        let in_group = status.is_ok() && group_alive(self.pgid);
        let leftovers = told || in_group;
        if in_group {
            signal(libc::SIGKILL);
            let until = Instant::now() + LEFTOVER_GRACE;
            while Instant::now() < until && group_alive(self.pgid) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        RUNNING.lock().unwrap().0.remove(&self.pgid);
        status.map(|status| Ended { status, leftovers })
    }
}

/// Whether process group `pgid` has a process that has not ended: on Linux one whose `/proc/PID/stat` names the
/// group and is not a zombie (an ended process its new parent has not reaped yet, which a container's init may
/// never do); elsewhere one that signal 0 finds.
fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 checks for existence only.
    if unsafe { libc::killpg(pgid, 0) } != 0 {
        return false;
    }
    #[cfg(target_os = "linux")]
    if let Ok(dir) = std::fs::read_dir("/proc") {
        return dir.flatten().filter(|e| e.file_name().as_encoded_bytes().iter().all(u8::is_ascii_digit)).any(|e| {
            // `PID (COMM) STATE PPID PGRP …`; COMM may hold spaces and parentheses: read after the last `)`.
            std::fs::read_to_string(e.path().join("stat")).is_ok_and(|st| {
                let mut f = st.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace();
                let (state, pgrp) = (f.next(), f.nth(1));
                !matches!(state, Some("Z" | "X")) && pgrp.and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
            })
        });
    }
    true
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
    while Instant::now() < until && groups.iter().any(|&g| group_alive(g)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &g in groups.iter().filter(|&&g| group_alive(g)) {
        // SAFETY: as above.
        unsafe { libc::killpg(g, libc::SIGKILL) };
    }
    groups.len()
}

/// Where programs' forwarded output (and the front end's log lines) go: standard error, unless a front end
/// installed a writer of its own ([`set_output_sink`]), e.g. one that draws its progress bars around the lines
/// instead of over them.
type OutputSink = Box<dyn Fn(&[u8]) + Send + Sync>;

static OUTPUT_SINK: std::sync::RwLock<Option<OutputSink>> = std::sync::RwLock::new(None);

/// Sends the programs' forwarded output (prefixed lines) to `sink` instead of standard error, for the rest of
/// the process (`None`: standard error again).
pub fn set_output_sink(sink: Option<OutputSink>) {
    *OUTPUT_SINK.write().unwrap_or_else(|e| e.into_inner()) = sink;
}

/// Writes forwarded program output through the installed sink, else to standard error (dropped when standard
/// error is closed).
pub fn write_output(bytes: &[u8]) {
    let sink = OUTPUT_SINK.read().unwrap_or_else(|e| e.into_inner());
    match sink.as_ref() {
        Some(f) => f(bytes),
        None => {
            use std::io::Write;
            let _ = std::io::stderr().lock().write_all(bytes);
        }
    }
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
        let status = p.wait().unwrap().status;
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
