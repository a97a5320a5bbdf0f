//! A program's output, forwarded line by line under its node's prefix, with its last lines kept for a failure.

/// A program's output as forwarded: whole lines (ended by `\n` or `\r`, a `\r\n` as one end), each with its node's
/// prefix, so that nothing else (another node's output, polyflow's own lines) lands within a line; a line still
/// unfinished when nothing more came for [`Prefixed::WAIT`] (a prompt, the end of the output) is written with a
/// line end of its own, as is one past [`Prefixed::LONGEST`] bytes.
struct Prefixed {
    prefix: Vec<u8>,
    pending: Vec<u8>,
    after_cr: bool,
}

impl Prefixed {
    /// How long an unfinished line waits for its end.
    const WAIT: std::time::Duration = std::time::Duration::from_millis(200);
    /// The longest line held back.
    const LONGEST: usize = 1 << 16;

    fn new(prefix: String) -> Prefixed {
        Prefixed { prefix: prefix.into_bytes(), pending: vec![], after_cr: false }
    }

    /// Appends to `out` what `bytes` complete.
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        for &b in bytes {
            // The `\n` of a `\r\n`: the line was written with its `\r`.
            if b == b'\n' && self.after_cr && self.pending.is_empty() {
                out.push(b);
                self.after_cr = false;
                continue;
            }
            self.pending.push(b);
            self.after_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                out.extend_from_slice(&self.prefix);
                out.append(&mut self.pending);
            } else if self.pending.len() >= Self::LONGEST {
                self.cut(out);
            }
        }
    }

    /// Appends to `out` the unfinished line, ended.
    fn cut(&mut self, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            out.extend_from_slice(&self.prefix);
            out.append(&mut self.pending);
            out.push(b'\n');
        }
        self.after_cr = false;
    }
}

/// A program's standard output and error, forwarded as they come to polyflow's standard error (standard output
/// is `--json`'s event stream), each line prefixed with its node's id (nodes run side by side), while the last
/// [`OutputTail::KEEP`] lines (ended by `\n` or `\r`, at most [`OutputTail::MAX_LINE`] bytes each) are kept for the
/// failure record. Memory stays bounded: a program that writes faster than polyflow's standard error is read
/// waits for it, as it would writing to a terminal.
pub(super) struct OutputTail {
    state: std::sync::Arc<(std::sync::Mutex<TailState>, std::sync::Condvar)>,
}

/// What the forwarding thread shares with [`OutputTail::finish`].
#[derive(Default)]
struct TailState {
    /// The last lines.
    kept: std::collections::VecDeque<String>,
    /// The output has ended and all of it was forwarded.
    done: bool,
    /// Since when the forwarding thread has had nothing to write (none while it is writing).
    idle_since: Option<std::time::Instant>,
}

impl OutputTail {
    /// Lines kept.
    const KEEP: usize = 20;
    /// Bytes kept of one line.
    const MAX_LINE: usize = 500;
    /// Chunks read ahead of what was forwarded (of at most 8 KiB each).
    const AHEAD: usize = 16;
    /// How long [`OutputTail::finish`] waits for an output that stays open but silent (a process that left the
    /// program's group holds it).
    const SILENT: std::time::Duration = std::time::Duration::from_secs(2);

    /// The most bytes of a program's output kept in its log.
    const LOG_MAX: u64 = 64 << 20;

    /// Follows `output` (the program's standard output and error, one pipe) on a thread of its own; what is
    /// forwarded has `prefix` at the start of every line (after each `\n` or `\r`, so a redrawn progress bar keeps
    /// it). All of it, as written, also goes to `log` where given (up to [`OutputTail::LOG_MAX`] bytes, then a line
    /// saying the rest is not kept).
    pub(super) fn follow(output: std::io::PipeReader, prefix: String, log: Option<std::fs::File>) -> OutputTail {
        let state = std::sync::Arc::new((std::sync::Mutex::new(TailState::default()), std::sync::Condvar::new()));
        // Bounded: the reader waits while the forwarding is behind, and so the program does.
        let (chunks_tx, chunks) = std::sync::mpsc::sync_channel::<Vec<u8>>(Self::AHEAD);
        // Read as it comes, on a thread of its own, so that a line left unfinished is cut after a while.
        std::thread::spawn(move || {
            use std::io::Read;
            let (mut r, mut buf) = (output, [0u8; 8192]);
            while let Ok(k) = r.read(&mut buf) {
                if k == 0 || chunks_tx.send(buf[..k].to_vec()).is_err() {
                    break;
                }
            }
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            // Forwarded line by line, prefixed (a progress bar redrawn with `\r` shows live), while lines, ended by
            // `\n` or `\r` and cut at MAX_LINE bytes, go to the tail.
            let (mut fwd, mut out, mut line) = (Prefixed::new(prefix), Vec::new(), Vec::new());
            let (mut log, mut logged) = (log.map(std::io::BufWriter::new), 0u64);
            let keep = |line: &mut Vec<u8>| {
                if !line.is_empty() {
                    let mut st = shared.0.lock().unwrap();
                    st.kept.push_back(String::from_utf8_lossy(line).into_owned());
                    if st.kept.len() > OutputTail::KEEP {
                        st.kept.pop_front();
                    }
                    line.clear();
                }
            };
            loop {
                out.clear();
                {
                    let mut st = shared.0.lock().unwrap();
                    if st.idle_since.is_none() {
                        st.idle_since = Some(std::time::Instant::now());
                        shared.1.notify_all();
                    }
                }
                let next = chunks.recv_timeout(Prefixed::WAIT);
                if next.is_ok() {
                    shared.0.lock().unwrap().idle_since = None;
                }
                let done = match next {
                    Ok(chunk) => {
                        fwd.push(&chunk, &mut out);
                        if let Some(w) = log.as_mut() {
                            use std::io::Write;
                            let room = OutputTail::LOG_MAX.saturating_sub(logged) as usize;
                            let mut kept = w.write_all(&chunk[..chunk.len().min(room)]);
                            logged += chunk.len() as u64;
                            let full = logged > OutputTail::LOG_MAX;
                            if full {
                                let mib = OutputTail::LOG_MAX >> 20;
                                kept = kept.and_then(|_| writeln!(w, "\n[polyflow: the output past {mib} MiB is not kept]"));
                            }
                            // A log that cannot be written (a full disk) is given up, not the program's run.
                            if kept.is_err() || full {
                                let _ = w.flush();
                                log = None;
                            }
                        }
                        for &b in &chunk {
                            if b == b'\n' || b == b'\r' {
                                keep(&mut line);
                            } else if line.len() < OutputTail::MAX_LINE {
                                line.push(b);
                            }
                        }
                        false
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        fwd.cut(&mut out);
                        false
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        fwd.cut(&mut out);
                        true
                    }
                };
                if !out.is_empty() {
                    crate::stage::children::write_output(&out);
                }
                if done {
                    break;
                }
            }
            keep(&mut line);
            if let Some(mut w) = log {
                use std::io::Write;
                let _ = w.flush();
            }
            shared.0.lock().unwrap().done = true;
            shared.1.notify_all();
        });
        OutputTail { state }
    }

    /// The last lines, once the output has ended and all of it was forwarded (however slowly polyflow's standard
    /// error is read), or once it has stayed open and silent for [`OutputTail::SILENT`] (a process that left the
    /// program's group may hold it; what it writes later goes on being forwarded).
    pub(super) fn finish(self) -> Vec<String> {
        let (lock, cvar) = &*self.state;
        let mut st = lock.lock().unwrap();
        loop {
            if st.done || st.idle_since.is_some_and(|t| t.elapsed() >= Self::SILENT) {
                return st.kept.iter().cloned().collect();
            }
            // Woken when the output ends or falls silent; checked again at least every 100 ms.
            st = cvar.wait_timeout(st, std::time::Duration::from_millis(100)).unwrap().0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Prefixed;

    /// What `chunks` give, each followed by a cut where `cut_after` says so.
    fn forwarded(chunks: &[(&str, bool)]) -> String {
        let (mut p, mut out) = (Prefixed::new("[a] ".into()), vec![]);
        for (c, cut) in chunks {
            p.push(c.as_bytes(), &mut out);
            if *cut {
                p.cut(&mut out);
            }
        }
        p.cut(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_are_prefixed_whole() {
        // Lines split across reads, a progress bar redrawn with `\r`, a CRLF line, blank lines.
        assert_eq!(forwarded(&[("one\ntw", false), ("o\n\n", false)]), "[a] one\n[a] two\n[a] \n");
        assert_eq!(forwarded(&[("1%\r50%\r", false), ("100%\r\n", false)]), "[a] 1%\r[a] 50%\r[a] 100%\r\n");
        assert_eq!(forwarded(&[("x\r", false), ("\ny\r\n", false)]), "[a] x\r\n[a] y\r\n");
        // An unfinished line, cut when nothing more came, goes on under the prefix; the end of the output ends it.
        assert_eq!(forwarded(&[("part1 ", true), ("part2\nlast", false)]), "[a] part1 \n[a] part2\n[a] last\n");
        // Nothing at all: nothing.
        assert_eq!(forwarded(&[("", true)]), "");
    }

    #[test]
    fn a_very_long_line_is_not_held_back_whole() {
        let long = "x".repeat(Prefixed::LONGEST + 10);
        let out = forwarded(&[(&long, false)]);
        assert_eq!(out.matches("[a] ").count(), 2);
        assert_eq!(out.len(), long.len() + 2 * 4 + 2);
    }
}
