//! Work prepared ahead of the training loop (its batches), run as jobs of the thread pool the loop itself runs
//! in: a node given `cpus = N` decodes and augments on the same N threads that train, never on rayon's
//! machine-wide global pool (which a separate prefetch thread's parallel loops would fall into).
//!
//! The caller waits for a result by helping: while the job it needs is still queued it runs queued jobs itself
//! (`rayon::yield_now`), so a pool of one thread — whose only worker is the training loop — cannot deadlock.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, TryRecvError};

/// A job's result, or the message it panicked with.
pub type Made<T> = Result<T, String>;

/// Keeps up to `ahead` jobs of an ordered sequence queued or running in a rayon scope's pool, and hands their
/// results back in the sequence's order.
pub struct Prefetch<I, T> {
    jobs: I,
    ahead: usize,
    queue: VecDeque<Receiver<Made<T>>>,
}

impl<I, T> Prefetch<I, T> {
    /// Prefetches `jobs` (made lazily, in order, on the calling thread), keeping `ahead` (at least one) of them
    /// started beyond the one being waited for.
    pub fn new(jobs: I, ahead: usize) -> Self {
        Prefetch { jobs, ahead: ahead.max(1), queue: VecDeque::new() }
    }

    /// The next job's result (`None` once the sequence is exhausted), after starting the jobs that follow it in
    /// `scope` (FIFO, so the pool starts them in order). A job that panicked gives its message.
    pub fn next<'scope, F>(&mut self, scope: &rayon::ScopeFifo<'scope>) -> Option<Made<T>>
    where
        I: Iterator<Item = F>,
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        while self.queue.len() <= self.ahead {
            let Some(job) = self.jobs.next() else { break };
            let (tx, rx) = channel();
            scope.spawn_fifo(move |_| {
                let _ = tx.send(catch_unwind(AssertUnwindSafe(job)).map_err(|p| panic_message(p.as_ref())));
            });
            self.queue.push_back(rx);
        }
        let rx = self.queue.pop_front()?;
        Some(wait(&rx))
    }
}

/// Waits for `rx`'s one result, running the pool's queued jobs meanwhile; once none is left for this thread the
/// awaited job is running on another worker (or done), and blocking is safe.
fn wait<T>(rx: &Receiver<Made<T>>) -> Made<T> {
    let stopped = || Err("the job stopped without a result".to_string());
    loop {
        match rx.try_recv() {
            Ok(v) => return v,
            Err(TryRecvError::Disconnected) => return stopped(),
            Err(TryRecvError::Empty) => {}
        }
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            return rx.recv().unwrap_or_else(|_| stopped());
        }
    }
}

/// The text a panic carried (`panic!("...")` or a formatted message).
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|m| m.to_string()))
        .unwrap_or_else(|| "the job failed".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// Each job does nested parallel work, as decoding a batch does; returns (job, pool size seen by the job,
    /// sum of its nested loop).
    fn run_in_pool(threads: usize, n: usize, ahead: usize) -> Vec<(usize, usize, u64)> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            rayon::in_place_scope_fifo(|s| {
                let jobs = (0..n).map(|k| {
                    move || {
                        let sum = (0..1000u64).into_par_iter().map(|v| v * k as u64).sum::<u64>();
                        (k, rayon::current_num_threads(), sum)
                    }
                });
                let mut pre = Prefetch::new(jobs, ahead);
                let mut out = Vec::new();
                while let Some(r) = pre.next(s) {
                    out.push(r.unwrap());
                }
                out
            })
        })
    }

    #[test]
    fn results_come_in_order_from_the_callers_pool_even_with_one_thread() {
        for (threads, ahead) in [(1, 1), (1, 3), (2, 2), (3, 1)] {
            let out = run_in_pool(threads, 9, ahead);
            assert_eq!(out.len(), 9);
            for (k, &(job, pool, sum)) in out.iter().enumerate() {
                assert_eq!(job, k, "order, {threads} threads");
                // The jobs ran in the caller's pool, not in rayon's global one.
                assert_eq!(pool, threads);
                assert_eq!(sum, 499_500 * k as u64);
            }
        }
    }

    #[test]
    fn a_panicking_job_gives_its_message_and_the_rest_still_come() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let got: Vec<Made<usize>> = pool.install(|| {
            rayon::in_place_scope_fifo(|s| {
                let jobs = (0..3usize).map(|k| {
                    move || {
                        if k == 1 {
                            panic!("damaged record {k}");
                        }
                        k
                    }
                });
                let mut pre = Prefetch::new(jobs, 2);
                std::iter::from_fn(|| pre.next(s)).collect()
            })
        });
        assert_eq!(got, vec![Ok(0), Err("damaged record 1".to_string()), Ok(2)]);
    }

    #[test]
    fn at_most_ahead_jobs_are_started_beyond_the_awaited_one() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let made = AtomicUsize::new(0);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            rayon::in_place_scope_fifo(|s| {
                let jobs = (0..10usize).map(|k| {
                    made.fetch_add(1, Ordering::SeqCst);
                    move || k
                });
                let mut pre = Prefetch::new(jobs, 2);
                for k in 0..4 {
                    assert_eq!(pre.next(s), Some(Ok(k)));
                    // Job k was awaited; jobs k+1 and k+2 are started; nothing further was made.
                    assert_eq!(made.load(Ordering::SeqCst), k + 3);
                }
            })
        });
    }
}
