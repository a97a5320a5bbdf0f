//! Reporters: render engine [`Event`]s as progress bars (terminal), plain lines, or JSON lines.

use crate::exec::{Event, State};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

/// How to print events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// indicatif bars on a terminal.
    Bars,
    /// One plain line per event (not a terminal).
    Plain,
    /// JSON lines on stdout (for CI).
    Json,
}

/// A reporter.
pub struct Reporter {
    mode: Mode,
    verbose: bool,
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    /// Raised when the JSON lines' reader goes away (the run's stop flag).
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// The nodes that failed, with the first line of each error, listed again after the summary (a sweep's
    /// failures are otherwise scattered through its output).
    failures: Mutex<Vec<(String, String)>>,
}

/// The longest node id a progress bar shows (longer ones cut in the middle, keeping the end that tells a
/// sweep's nodes apart).
const BAR_ID_CHARS: usize = 36;

/// How many failures the closing list names.
const FAILURES_LISTED: usize = 10;

fn status(word: &str, rest: &str) -> String {
    format!("{word:>12} {rest}")
}

impl Reporter {
    /// Chooses bars on a terminal that can redraw (not `TERM=dumb`), plain lines otherwise, or JSON when asked.
    /// With bars, programs' output is printed above them (a redraw would otherwise erase it).
    pub fn new(json: bool, verbose: bool) -> Self {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        let mode = if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() && !dumb {
            Mode::Bars
        } else {
            Mode::Plain
        };
        let multi = MultiProgress::new();
        if mode == Mode::Bars {
            let m = multi.clone();
            crate::stage::children::set_output_sink(Some(Box::new(move |bytes: &[u8]| {
                // Whole lines only: a `\r` update becomes a line of its own, which a redraw cannot overwrite.
                for l in String::from_utf8_lossy(bytes).split(['\n', '\r']).filter(|l| !l.is_empty()) {
                    let _ = m.println(l);
                }
            })));
        }
        Reporter { mode, verbose, multi, bars: Mutex::new(HashMap::new()), stop: None, failures: Mutex::new(vec![]) }
    }

    /// Raises `stop` when standard output is closed while JSON lines are written to it (`run … --json | head`),
    /// so the run stops as on SIGTERM instead of going on with nobody reading.
    pub fn stopping(mut self, stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>) -> Self {
        self.stop = stop;
        self
    }

    fn line(&self, s: String) {
        if self.mode == Mode::Bars {
            let _ = self.multi.println(s);
        } else {
            super::out::err_line(&s);
        }
    }

    /// Renders one event.
    pub fn event(&self, e: &Event) {
        if self.mode == Mode::Json {
            if !super::out::line(&serde_json::to_string(e).unwrap_or_default()) {
                if let Some(stop) = &self.stop {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            return;
        }
        match e {
            Event::Plan { nodes } => {
                let stale = nodes.iter().filter(|n| n.state != State::Fresh && !n.in_cache).count();
                let fetch = match nodes.iter().filter(|n| n.state != State::Fresh && n.in_cache).count() {
                    0 => String::new(),
                    n => format!(", {n} to fetch from the shared cache"),
                };
                let s = if nodes.len() == 1 { "" } else { "s" };
                self.line(status("Plan", &format!("{} node{s}, {stale} to run{fetch}", nodes.len())));
                if self.verbose {
                    for n in nodes.iter().filter(|n| n.state != State::Fresh) {
                        self.line(status("Dirty", &format!("{}: {}", n.id, n.reason)));
                    }
                }
            }
            Event::Fresh { id, after_inputs, .. } => {
                if self.verbose {
                    let how = if *after_inputs { " (its inputs came out as before)" } else { "" };
                    self.line(status("Fresh", &format!("{id}{how}")));
                }
            }
            Event::Started { id, kind, reason, devices, .. } => {
                let on = match devices.as_slice() {
                    [] => String::new(),
                    [d] => format!(" on device {d}"),
                    ds => format!(" on devices {}", ds.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",")),
                };
                self.line(status("Running", &format!("{id} ({kind}){on}: {reason}")));
                if self.mode == Mode::Bars {
                    // A spinner and the time so far until the node reports steps (a `command` never does).
                    let pb = self.multi.add(ProgressBar::new(1));
                    pb.set_style(ProgressStyle::with_template("{prefix:>12.cyan} {spinner} {elapsed} {msg}").unwrap());
                    pb.set_prefix(crate::text::cut_middle(id, BAR_ID_CHARS));
                    pb.enable_steady_tick(std::time::Duration::from_millis(250));
                    self.bars.lock().unwrap().insert(id.clone(), pb);
                }
            }
            Event::Progress { id, done, total, message } => {
                if let Some(pb) = self.bars.lock().unwrap().get(id) {
                    if pb.length() == Some(1) && *total > 1 {
                        pb.set_style(
                            ProgressStyle::with_template("{prefix:>12.cyan} [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})")
                                .unwrap()
                                .progress_chars("=> "),
                        );
                    }
                    pb.set_length(*total);
                    pb.set_position(*done);
                    pb.set_message(message.clone());
                } else if self.verbose && (*done == *total || done % 50 == 0) {
                    self.line(status("Progress", &format!("{id} {done}/{total} {message}")));
                }
            }
            Event::Finished { id, ms, size, .. } => {
                if let Some(pb) = self.bars.lock().unwrap().remove(id) {
                    pb.finish_and_clear();
                }
                self.line(status("Finished", &format!("{id} in {} ({})", fmt_ms(*ms), fmt_bytes(*size))));
            }
            Event::Fetched { id, ms, size, from, .. } => {
                self.line(status("Fetched", &format!("{id} from the shared cache {from} in {} ({})", fmt_ms(*ms), fmt_bytes(*size))));
            }
            Event::Failed { id, at, error, .. } => {
                if let Some(pb) = self.bars.lock().unwrap().remove(id) {
                    pb.finish_and_clear();
                }
                self.line(status("Failed", &format!("{id} (declared at {at}): {error}")));
                self.failures.lock().unwrap().push((id.clone(), failure_line(error, id)));
            }
            Event::Retrying { id, attempt, attempts, ms, error, .. } => {
                if let Some(pb) = self.bars.lock().unwrap().remove(id) {
                    pb.finish_and_clear();
                }
                let what = failure_line(error, id);
                self.line(status(
                    "Retrying",
                    &format!("{id}: attempt {attempt} of {attempts} failed after {}: {what}; starting it again", fmt_ms(*ms)),
                ));
            }
            Event::Note { id, message } => self.line(status("Note", &format!("{id}: {message}"))),
            Event::Skipped { id, because, .. } => self.line(status("Skipped", &format!("{id} (upstream {because} failed)"))),
            // The error that ends the run names what was running: only the bar goes.
            Event::Interrupted { id, .. } => {
                if let Some(pb) = self.bars.lock().unwrap().remove(id) {
                    pb.finish_and_clear();
                }
            }
            Event::Summary {
                ran,
                fresh,
                fresh_after_inputs,
                fetched,
                published,
                published_to,
                failed,
                skipped,
                interrupted,
                not_started,
                ms,
                nodes,
            } => {
                if self.verbose {
                    for n in nodes.iter().filter(|n| n.outcome == crate::exec::event::Outcome::Ran) {
                        self.line(status("Time", &format!("{} {}", n.id, fmt_ms(n.ms))));
                    }
                }
                let fetched = if *fetched > 0 { format!(", {fetched} fetched") } else { String::new() };
                let (word, stopped) = if *interrupted > 0 || *not_started > 0 {
                    ("Stopped", format!(", {interrupted} interrupted, {not_started} not started"))
                } else {
                    ("Done", String::new())
                };
                // Nodes the plan counted to run that did not: their inputs came out as before.
                let cut = match fresh_after_inputs {
                    0 => String::new(),
                    n => format!(" ({n} of the plan's found fresh once their inputs came out as before)"),
                };
                self.line(status(
                    word,
                    &format!("{ran} ran, {fresh} fresh{cut}{fetched}, {failed} failed, {skipped} skipped{stopped} in {}", fmt_ms(*ms)),
                ));
                // Where what ran went besides this store (a `[cache]` of the pipeline file's says so only here).
                if let (Some(to), 1..) = (published_to, *published) {
                    let s = if *published == 1 { "" } else { "s" };
                    self.line(status("Published", &format!("{published} artifact{s} to the shared cache {to}")));
                }
                // Listed together at the end, where a long run's failures are found (`status --stale` and `show`
                // tell the rest).
                let failures = self.failures.lock().unwrap();
                if !failures.is_empty() {
                    for (id, first) in failures.iter().take(FAILURES_LISTED) {
                        self.line(status("Failed", &format!("{id}: {first}")));
                    }
                    if failures.len() > FAILURES_LISTED {
                        self.line(format!(
                            "{:>12} {} more (`polyflow status FILE --stale` lists them)",
                            "",
                            failures.len() - FAILURES_LISTED
                        ));
                    }
                }
            }
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if self.mode == Mode::Bars {
            crate::stage::children::set_output_sink(None);
        }
    }
}

/// A failure in one line: its first line without the `node `ID`: ` it starts with (a long command line shortened,
/// not how it ended: "`sh -c …` exited with code 1"), and the program's last line of output where kept (`loss is
/// NaN`, a traceback's error), without the program's terminal control sequences.
fn failure_line(error: &str, id: &str) -> String {
    let first = crate::text::failure_headline(error, id);
    let cut = crate::text::cut;
    let mut line = match first.strip_prefix('`').and_then(|r| r.rsplit_once("` ")) {
        Some((cmd, how)) => format!("`{}` {how}", cut(cmd, 60)),
        None => cut(first, 160),
    };
    let last = error.split_once(" of output:\n").and_then(|(_, o)| o.lines().map(str::trim).rfind(|l| !l.is_empty()));
    if let Some(last) = last {
        line.push_str(&format!(" — {}", cut(last, 120)));
    }
    plain(&line)
}

/// `s` without terminal control sequences (`ESC [ … letter`, `ESC ] … BEL`) or other control characters.
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                Some('[') => {
                    chars.next();
                    // Parameters and intermediates, then one final byte in `@`..=`~`.
                    for d in chars.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    for d in chars.by_ref() {
                        if d == '\u{7}' || d == '\u{1b}' {
                            break;
                        }
                    }
                }
                _ => {
                    chars.next();
                }
            },
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// `1.2s`, `340ms`, `3m05s`.
pub use crate::text::fmt_ms;

/// `12.3 KiB` (the one formatter, shared with the HTML report).
pub use crate::report::html::bytes as fmt_bytes;

#[cfg(test)]
mod tests {
    #[test]
    fn control_sequences_are_left_out() {
        assert_eq!(super::plain("\u{1b}[31mred\u{1b}[0m and \u{1b}]0;title\u{7}x\u{8}"), "red and x");
        assert_eq!(super::plain("plain — text"), "plain — text");
    }
}
