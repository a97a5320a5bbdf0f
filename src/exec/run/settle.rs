//! How a node's work ends: its artifact committed (blobs first, then the index entry), its failure recorded or
//! its attempt started again, a stop signal's interruption, and the run's summary.

use super::*;

impl Scheduler<'_> {
    /// The `summary` event: counts, the wall time since `t0` and each node's outcome in plan order.
    pub(super) fn emit_summary(&mut self, t0: std::time::Instant, interrupted: usize) {
        let mut nodes = std::mem::take(&mut self.timings);
        // A stopped run's nodes that never started (waiting on others, or for a slot): counted too.
        let seen: std::collections::HashSet<String> = nodes.iter().map(|t| t.id.clone()).collect();
        let mut not_started = 0;
        for &i in self.order.keys() {
            if !seen.contains(&self.g.nodes[i].id) {
                nodes.push(NodeTiming { id: self.id(i), outcome: Outcome::NotStarted, ms: 0 });
                not_started += 1;
            }
        }
        let pos: HashMap<String, usize> = self.order.iter().map(|(&i, &p)| (self.id(i), p)).collect();
        nodes.sort_by_key(|t| pos.get(&t.id).copied().unwrap_or(usize::MAX));
        (self.sink)(&Event::Summary {
            ran: self.summary.ran.len(),
            fresh: self.summary.fresh.len(),
            fresh_after_inputs: self.cut_off,
            fetched: self.summary.fetched.len(),
            published: self.published,
            published_to: self.opts.cache.as_ref().filter(|_| self.opts.publish).map(|c| c.describe()),
            failed: self.summary.failed.len(),
            skipped: self.summary.skipped.len(),
            interrupted,
            not_started,
            ms: t0.elapsed().as_millis() as u64,
            nodes,
        });
    }

    /// Waits for node `i`'s publication `h`: counted when it added the entry, told when it failed.
    pub(super) fn joined(&mut self, i: usize, h: std::thread::JoinHandle<Result<bool, String>>) {
        match h.join() {
            Ok(Ok(true)) => self.published += 1,
            Ok(Err(message)) => (self.sink)(&Event::Note { id: self.id(i), message }),
            _ => {}
        }
    }

    /// Gives node `i`'s slots back.
    pub(super) fn release(&mut self, i: usize) {
        if let Some(r) = self.running.remove(&i) {
            self.free_cpu += r.cpu;
            self.free_dev.extend(r.dev);
            self.note_running();
        }
    }

    /// Notes that what is in flight changed; [`Scheduler::write_running`] tells other processes.
    pub(super) fn note_running(&mut self) {
        self.running_changed = true;
    }

    /// Tells `status` in other processes what is in flight now ([`crate::exec::running`]), at most every quarter of a
    /// second: a file written at every start and end cost a run of 3,000 short nodes more than its nodes did.
    pub(super) fn write_running(&mut self) {
        if !self.running_changed || self.running_written.is_some_and(|t| t.elapsed() < Duration::from_millis(250)) {
            return;
        }
        let nodes =
            self.running.iter().map(|(&i, r)| (self.id(i), crate::exec::running::InFlight { since: r.since, fetch: r.fetch })).collect();
        crate::exec::running::write(&self.store.root, nodes);
        self.running_changed = false;
        self.running_written = Some(Instant::now());
    }

    /// Commits node `i`'s artifact (its blobs are durable already): index entry, then its scratch goes.
    pub(super) fn commit(&mut self, i: usize, manifest: Manifest, ms: u64, runner: RunnerNotes) -> Result<(), StoreError> {
        let fp = self.assessed[&i].fingerprint.clone().expect("a started node has a fingerprint");
        let key = fp.key();
        let record = NodeRecord {
            id: self.id(i),
            key: key.clone(),
            fingerprint: fp,
            artifact: manifest.digest.clone(),
            // A fetched artifact records what computing it took where it was computed (when the cache says), so
            // `plan` estimates a re-run from it, not from the copy's milliseconds.
            duration_ms: runner.get("computed_ms").and_then(|v| v.parse().ok()).unwrap_or(ms),
            finished_at: crate::text::now_secs(),
            runner,
        };
        let mut record = record;
        for (k, v) in &self.opts.notes {
            record.runner.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let fetched = record.runner.get(crate::exec::FETCHED_FROM).cloned();
        if fetched.is_none() {
            record.runner.insert(crate::exec::BUILT_WITH.to_string(), env!("POLYFLOW_BUILD").to_string());
        }
        self.idx.get()?.commit(&key, &manifest, &record)?;
        let _ = std::fs::remove_dir_all(self.store.partial_dir(&key));
        match fetched {
            Some(from) => {
                (self.sink)(&Event::Fetched {
                    id: self.id(i),
                    kind: self.kind(i),
                    ms,
                    key: key.clone(),
                    artifact: manifest.digest.clone(),
                    size: manifest.size(),
                    from,
                });
                self.summary.fetched.push(self.id(i));
                self.timings.push(NodeTiming { id: self.id(i), outcome: Outcome::Fetched, ms });
            }
            None => {
                (self.sink)(&Event::Finished {
                    id: self.id(i),
                    kind: self.kind(i),
                    ms,
                    key: key.clone(),
                    artifact: manifest.digest.clone(),
                    size: manifest.size(),
                });
                self.publish(i, &key, &manifest, ms);
                self.summary.ran.push(self.id(i));
                self.timings.push(NodeTiming { id: self.id(i), outcome: Outcome::Ran, ms });
            }
        }
        self.mark_done(i, manifest, Some(key));
        Ok(())
    }

    /// Records node `i`'s failure — or, when it failed because an input's blob was found damaged (readers move
    /// such blobs aside), recomputes that input and retries the node, once.
    pub(super) fn fail(&mut self, i: usize, e: StageError, ms: u64, runner: RunnerNotes) -> Result<(), StoreError> {
        let damaged: Vec<usize> = self.g.nodes[i]
            .inputs
            .values()
            .flatten()
            .copied()
            .filter(|u| match self.done.get(u) {
                Some(m) => self.store.check(m).is_some(),
                // Already sent back to be recomputed for another reader of the same damaged blob.
                None => self.pending.contains_key(u) || self.running.contains_key(u),
            })
            .collect();
        if !damaged.is_empty() && self.retried.insert(i) {
            for &u in &damaged {
                let uid = self.id(u);
                self.summary.fresh.retain(|x| *x != uid);
                self.summary.ran.retain(|x| *x != uid);
                self.summary.fetched.retain(|x| *x != uid);
                self.timings.retain(|t| t.id != uid);
                self.requeue(u);
                let msg = format!("input `{}` was damaged in the store (moved to damaged/): recomputing it, then retrying", self.id(u));
                (self.sink)(&Event::Note { id: self.id(i), message: msg });
            }
            self.requeue(i);
            return Ok(());
        }
        let (id, kind) = (self.id(i), self.kind(i));
        // Its work failed (not its input, not the store's disk, which would fail the same way again): started
        // again while it has attempts left, resuming from what the failed attempt checkpointed.
        let allowed = self.retries(i);
        let failed_before = self.attempts.get(&i).copied().unwrap_or(0);
        if e.class == FailureClass::Failed && failed_before < allowed {
            self.attempts.insert(i, failed_before + 1);
            let (attempt, attempts) = (failed_before + 1, allowed + 1);
            (self.sink)(&Event::Retrying { id, kind, attempt, attempts, ms, error: e.message });
            self.requeue(i);
            return Ok(());
        }
        if let Some(key) = &self.assessed[&i].key {
            self.idx.get()?.fail(&FailRecord { id: id.clone(), key: key.clone(), error: e.message.clone(), runner })?;
        }
        (self.sink)(&Event::Failed { id: id.clone(), kind, at: self.g.nodes[i].location.clone(), ms, error: e.message.clone() });
        self.failed.insert(i);
        self.summary.failed.push((id.clone(), e.class));
        self.timings.push(NodeTiming { id, outcome: Outcome::Failed, ms });
        self.skip_dependents(i);
        Ok(())
    }

    /// The attempts after a failed one node `i` may have: its own `resources.retries`, else `--retries`, else the
    /// `[executor]` table's, else none.
    pub(super) fn retries(&self, i: usize) -> u32 {
        let n = &self.g.nodes[i];
        n.resources.retries.or(self.opts.retries).or(self.g.executor.defaults.retries).unwrap_or(0)
    }

    /// Puts node `i` back among the waiting ones (its artifact, if it had one, is gone): its waiting dependents
    /// wait for it again.
    pub(super) fn requeue(&mut self, i: usize) {
        // Waiting already, or being recomputed right now (another reader of the same damaged blob): its
        // dependents wait for it through their counts.
        if self.pending.contains_key(&i) || self.running.contains_key(&i) {
            return;
        }
        if self.done.remove(&i).is_some() {
            for &d in self.dependents.get(&i).into_iter().flatten() {
                if let Some(n) = self.pending.get_mut(&d) {
                    *n += 1;
                    self.ready.remove(&(self.order[&d], d));
                }
            }
        }
        self.enqueue(i);
    }

    /// Stops the run: cancels (or leaves, with `keep`) what runs, records the cancelled nodes as failed attempts.
    pub(super) fn interrupt(&mut self, t0: Instant) -> Result<crate::exec::ExecError, StoreError> {
        let keep = self.opts.keep_jobs || self.g.executor.on_interrupt == OnInterrupt::Keep;
        // External programs of `command` nodes run in process groups of their own (a terminal's Ctrl-C reaches
        // polyflow only): stop them, so that none outlives the run.
        crate::stage::children::stop_all(Duration::from_secs(3));
        // The nodes whose Slurm jobs are left running (`--keep-jobs`): asked before the launcher lets go of them.
        let kept: BTreeSet<usize> = if keep && self.launcher.keeps_jobs() {
            self.running.keys().copied().filter(|&i| self.launcher.holds(i)).collect()
        } else {
            BTreeSet::new()
        };
        // The jobs cancelled, named with their nodes (`slow (Slurm job 12, cancelled)`).
        let mut cancelled: BTreeMap<usize, String> = BTreeMap::new();
        for (i, runner) in self.launcher.interrupt(keep) {
            if let Some(job) = runner.get("slurm_job") {
                let told = match runner.get("scancel_error") {
                    Some(e) => format!(" (Slurm job {job}: scancel failed, {e}; `scancel {job}` stops it)"),
                    None => format!(" (Slurm job {job}, cancelled)"),
                };
                cancelled.insert(i, told);
            }
            let error = match (runner.get("slurm_job"), runner.get("scancel_error")) {
                (Some(job), Some(e)) => format!(
                    "the coordinating `polyflow run` was interrupted and `scancel {job}` failed ({e}): the job may still be running; `scancel {job}`, then run again"
                ),
                _ => "cancelled: the coordinating `polyflow run` was interrupted; run again to resubmit".to_string(),
            };
            if let Some(key) = self.assessed[&i].key.clone() {
                let id = self.id(i);
                self.idx.get()?.fail(&FailRecord { id, key, error, runner })?;
            }
        }
        // The others stopped here: recorded as such (`status` says so, not "never run"); a run computes them again.
        let stopped: Vec<(usize, u64)> = self
            .running
            .iter()
            .filter(|(i, r)| !r.fetch && !cancelled.contains_key(i) && !kept.contains(i))
            .map(|(&i, r)| (i, r.t.elapsed().as_millis() as u64))
            .collect();
        for (i, ms) in stopped {
            if let Some(key) = self.assessed[&i].key.clone() {
                let error = format!(
                    "interrupted after {}: its run was stopped before it finished; `polyflow run` computes it again",
                    crate::text::fmt_ms(ms)
                );
                let runner = [(crate::exec::assess::INTERRUPTED.to_string(), ms.to_string())].into();
                let id = self.id(i);
                self.idx.get()?.fail(&FailRecord { id, key, error, runner })?;
            }
        }
        self.idx.flush()?;
        let names: Vec<String> = self
            .running
            .iter()
            .map(|(&i, r)| {
                let how = match cancelled.get(&i) {
                    Some(c) => c.clone(),
                    None if r.fetch => " (fetching from the shared cache)".to_string(),
                    None => String::new(),
                };
                format!("{}{how}", self.id(i))
            })
            .collect();
        // Forced re-runs of an artifact the store holds under the same key: it stays (said apart).
        let mut rerun: Vec<String> = vec![];
        for i in self.running.keys().copied().collect::<Vec<_>>() {
            let Some(key) = self.assessed.get(&i).and_then(|a| a.key.clone()) else { continue };
            if self.idx.get().ok().and_then(|x| x.artifact(&key).ok().flatten()).is_some() {
                rerun.push(self.id(i));
            }
        }
        // Each node stopped, then the summary, so that a reader of the events closes every `started` one (a fetch
        // had none: it ends without an event).
        let running: Vec<(usize, bool, u64)> = self.running.iter().map(|(&i, r)| (i, r.fetch, r.t.elapsed().as_millis() as u64)).collect();
        for &(i, fetch, ms) in &running {
            if !fetch {
                (self.sink)(&Event::Interrupted { id: self.id(i), kind: self.kind(i), kept: kept.contains(&i) });
            }
            // How long it ran before it was stopped.
            self.timings.push(NodeTiming { id: self.id(i), outcome: Outcome::Interrupted, ms });
        }
        // Publications under way finish (each is a few copies, and what they publish is computed and kept):
        // counted in the summary as a finished run's are.
        for (j, h) in std::mem::take(&mut self.publishing) {
            self.joined(j, h);
        }
        self.emit_summary(t0, running.len());
        Ok(crate::exec::ExecError::Interrupted { kept: kept.len(), running: names, rerun, done: self.summary.ran.len() })
    }
}
