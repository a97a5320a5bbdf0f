//! The shared cache in a run: a stale node its cache holds is fetched instead of computed, and what the run
//! computes is published.

use super::*;

impl Scheduler<'_> {
    /// When the shared cache holds node `i`'s key (and it is not forced), copies the artifact on a thread of its
    /// own (one CPU slot locally); its end arrives as `Done` (committed like a run) or `FetchFailed` (computed).
    pub(super) fn try_fetch(&mut self, i: usize, a: &Assessment) -> Result<Option<Started>, crate::exec::ExecError> {
        let (Some(cache), Some(key)) = (self.opts.cache.clone(), a.key.clone()) else { return Ok(None) };
        if self.forced.contains(&i) || self.no_fetch.contains(&i) || a.fingerprint.is_none() {
            return Ok(None);
        }
        let entry = match cache.lookup(&key) {
            Ok(Some(e)) => e,
            Ok(None) => {
                if let Some(why) = cache.unusable(&key) {
                    self.no_fetch.insert(i);
                    let message = format!("not taken from the shared cache ({why}): computing it");
                    (self.sink)(&Event::Note { id: self.id(i), message });
                }
                return Ok(None);
            }
            Err(e) => {
                let message = format!("shared cache unreadable ({e}): computing it");
                (self.sink)(&Event::Note { id: self.id(i), message });
                return Ok(None);
            }
        };
        let cpu = usize::from(self.slotted());
        if cpu > self.free_cpu {
            return Ok(Some(Started::NoRoom));
        }
        self.free_cpu -= cpu;
        self.running.insert(i, Running { cpu, dev: vec![], fetch: true, since: crate::text::now_secs(), t: std::time::Instant::now() });
        self.note_running();
        self.assessed.insert(i, a.clone());
        let (store, tx) = (self.store.clone(), self.tx.clone());
        let spawned = std::thread::Builder::new().name(format!("polyflow-fetch-{i}")).spawn(move || {
            let t = Instant::now();
            // A panic must still end the node (the scheduler waits for every node it started).
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cache.fetch(&entry.manifest, &store.blobs)));
            let msg = match r {
                Ok(Ok(())) => {
                    let mut runner = RunnerNotes::from([(crate::exec::FETCHED_FROM.to_string(), cache.describe())]);
                    if let Some(ms) = entry.computed_ms {
                        runner.insert("computed_ms".to_string(), ms.to_string());
                    }
                    if !entry.polyflow.is_empty() {
                        runner.insert(crate::exec::PUBLISHED_WITH.to_string(), entry.polyflow.clone());
                    }
                    Msg::Done(i, Ok(entry.manifest), t.elapsed().as_millis() as u64, runner)
                }
                Ok(Err(e)) => Msg::FetchFailed(i, e.to_string()),
                Err(_) => Msg::FetchFailed(i, "the fetch panicked".to_string()),
            };
            let _ = tx.send(msg);
        });
        if let Err(e) = spawned {
            self.release(i);
            self.no_fetch.insert(i);
            let message = format!("not taken from the shared cache (cannot start a thread: {e}): computing it");
            (self.sink)(&Event::Note { id: self.id(i), message });
            return Ok(None);
        }
        Ok(Some(Started::Yes))
    }

    /// Publishes node `i`'s artifact to the shared cache on a thread of its own (whole or not at all; a failure
    /// is told, never fatal: the artifact is committed locally either way).
    pub(super) fn publish(&mut self, i: usize, key: &str, manifest: &Manifest, computed_ms: u64) {
        let Some(cache) = self.opts.cache.clone().filter(|_| self.opts.publish) else { return };
        // At most a few publications at a time: wait for the oldest before starting another.
        if self.publishing.len() >= MAX_PUBLISHING {
            let (j, h) = self.publishing.remove(0);
            self.joined(j, h);
        }
        let (store, key, m, id) = (self.store.clone(), key.to_string(), manifest.clone(), self.id(i));
        self.publishing.push((
            i,
            std::thread::spawn(move || {
                let new = cache
                    .publish(&key, &m, &id, crate::store::Made { computed_ms: Some(computed_ms), polyflow: env!("POLYFLOW_BUILD") }, &store.blobs)
                    .map_err(|e| format!("not published to the shared cache {}: {e}", cache.describe()))?;
                // Already there (a forced re-run, or a teammate first): the same key should give the same bytes.
                if new {
                    return Ok(true);
                }
                match cache.lookup(&key) {
                    Ok(Some(e)) if e.manifest.digest != m.digest => Err(format!(
                        "computed again here, it came out different from the artifact the shared cache holds for this key ({} here, {} there, published by `{}`{}): the node is not deterministic{}; the cache keeps the first",
                        &m.digest[..16.min(m.digest.len())],
                        &e.manifest.digest[..16.min(e.manifest.digest.len())],
                        e.node,
                        if e.polyflow.is_empty() { " with an earlier polyflow".to_string() } else { format!(" with polyflow {}", e.polyflow) },
                        if e.polyflow != env!("POLYFLOW_BUILD") { format!(", or polyflow {} computes it otherwise", env!("POLYFLOW_BUILD")) } else { String::new() }
                    )),
                    _ => Ok(false),
                }
            }),
        ));
    }
}
