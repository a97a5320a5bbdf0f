//! Task-sampling schedules (the paper's five) and the learning-rate schedule.
//!
//! A schedule turns per-task step budgets `U_j` into the task(s) of every update:
//!
//! | schedule | updates | task of update s |
//! |---|---|---|
//! | `task_by_task` | Σ U_j | all U_j1 steps of task j1, then j2, … in a seeded random task order |
//! | `alternating` | Σ U_j | s mod T (each task U/T steps) |
//! | `uniform` | Σ U_j | i.i.d. uniform draws (seeded) |
//! | `weighted` | Σ U_j | a seeded permutation of U_j copies of each task: exactly U_j steps each (the paper's choice) |
//! | `accumulate` | Σ U_j / T | every task, gradients combined (sum or mean) into one update |

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The five schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// One task after the other.
    TaskByTask,
    /// Fixed cycle 1, 2, …, T.
    Alternating,
    /// Uniform i.i.d. task draws.
    Uniform,
    /// Exact U_j counts in a seeded permutation.
    Weighted,
    /// Every task in every update.
    Accumulate,
}

/// Names accepted in pipelines.
pub const SCHEDULES: &[&str] = &["task_by_task", "alternating", "uniform", "weighted", "accumulate"];

/// The tasks of every update. `total` overrides Σ U_j (budgets scaled proportionally for `weighted`).
pub fn plan(schedule: Schedule, budgets: &[usize], total: Option<usize>, seed: u64) -> Vec<Vec<usize>> {
    let t = budgets.len();
    let sum: usize = budgets.iter().sum();
    let total = total.unwrap_or(sum);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    match schedule {
        Schedule::TaskByTask => {
            let mut order: Vec<usize> = (0..t).collect();
            order.shuffle(&mut rng);
            let mut v: Vec<Vec<usize>> = order.iter().flat_map(|&j| std::iter::repeat_n(vec![j], budgets[j])).collect();
            v.truncate(total);
            v
        }
        Schedule::Alternating => (0..total).map(|s| vec![s % t]).collect(),
        Schedule::Uniform => (0..total).map(|_| vec![rng.random_range(0..t)]).collect(),
        Schedule::Weighted => {
            let scaled = scale_budgets(budgets, total);
            let mut v: Vec<usize> = scaled.iter().enumerate().flat_map(|(j, &u)| std::iter::repeat_n(j, u)).collect();
            v.shuffle(&mut rng);
            v.into_iter().map(|j| vec![j]).collect()
        }
        Schedule::Accumulate => (0..total / t.max(1)).map(|_| (0..t).collect()).collect(),
    }
}

/// Budgets scaled to sum to `total` (largest remainders), keeping each ≥ 1 when possible.
pub fn scale_budgets(budgets: &[usize], total: usize) -> Vec<usize> {
    let sum: usize = budgets.iter().sum();
    if sum == total || sum == 0 {
        return budgets.to_vec();
    }
    let exact: Vec<f64> = budgets.iter().map(|&u| u as f64 * total as f64 / sum as f64).collect();
    let mut out: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut rest = total - out.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..budgets.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).partial_cmp(&(exact[a] - exact[a].floor())).unwrap().then(a.cmp(&b)));
    for j in order {
        if rest == 0 {
            break;
        }
        out[j] += 1;
        rest -= 1;
    }
    // Every task with a budget keeps at least one update while the total allows, taken from the largest share
    // (with Σ = total ≥ the number of such tasks, one of them holds two or more while another holds none).
    if total >= budgets.iter().filter(|&&u| u > 0).count() {
        for j in 0..out.len() {
            if budgets[j] > 0 && out[j] == 0 {
                let big = (0..out.len()).max_by_key(|&k| (out[k], std::cmp::Reverse(k))).unwrap();
                out[big] -= 1;
                out[j] = 1;
            }
        }
    }
    out
}

/// A run's updates (the task indices of each, from [`plan`]) and its global warmup ([`global_warmup`] of the
/// tasks' `(warmup, group)`), scaled by the share of Σ U_j the run makes when that is not all of it (`accumulate`
/// makes Σ U_j / T updates, `total_steps` sets another total), at most the run's length.
pub fn run_plan(
    schedule: Schedule,
    budgets: &[usize],
    warmups: &[(usize, Option<&str>)],
    total: Option<usize>,
    seed: u64,
) -> (Vec<Vec<usize>>, usize) {
    let updates = plan(schedule, budgets, total, seed);
    let (n, budget) = (updates.len(), budgets.iter().sum::<usize>());
    let mut warmup = global_warmup(warmups);
    if n != budget {
        warmup = ((warmup as f64) * n as f64 / budget.max(1) as f64).round() as usize;
    }
    (updates, warmup.min(n))
}

/// The global warmup of a co-training run, from each task's `(warmup, warmup group)`: a group (e.g. the paper's
/// image tasks, whose single-task warmups Scenic replaces by one shared 500-step warmup) counts once, with its
/// largest warmup; a task without a group adds its own. With no groups this is the plain sum Σ W_j.
///
/// Scenic's PolyViT config: 500 (once, for the image tasks) + 2.5 epochs of each audio/video task = 47,330.
pub fn global_warmup(tasks: &[(usize, Option<&str>)]) -> usize {
    let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
    let mut own = 0;
    for &(w, g) in tasks {
        match g {
            Some(g) => {
                let e = groups.entry(g).or_default();
                *e = (*e).max(w);
            }
            None => own += w,
        }
    }
    own + groups.values().sum::<usize>()
}

/// One global linear-warmup + cosine schedule (base 1.0), multiplied by the sampled task's peak LR.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Total updates T.
    pub total: usize,
    /// Warmup updates W.
    pub warmup: usize,
    /// Scenic computes cosine progress modulo 1, so the last update (s = T) uses the full peak LR.
    pub wrap_last: bool,
}

impl LrSchedule {
    /// The schedule value at 1-based step `s`.
    pub fn at(&self, s: usize) -> f64 {
        let s = s as f64;
        let w = self.warmup as f64;
        let warm = if w > 0.0 { (s / w).min(1.0) } else { 1.0 };
        let denom = (self.total as f64 - w).max(1.0);
        let mut progress = ((s - w) / denom).max(0.0);
        if self.wrap_last {
            progress %= 1.0;
        } else {
            progress = progress.min(1.0);
        }
        warm * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(p: &[Vec<usize>], t: usize) -> Vec<usize> {
        let mut c = vec![0; t];
        p.iter().flatten().for_each(|&j| c[j] += 1);
        c
    }

    #[test]
    fn global_warmup_counts_a_group_once() {
        // The paper's nine tasks: five image tasks share one 500-step warmup; audio/video add 2.5 epochs each.
        let img = Some("image");
        let t = [(500, img), (500, img), (500, img), (100, img), (200, img), (8390, None), (30910, None), (6735, None), (795, None)];
        assert_eq!(global_warmup(&t), 47_330);
        assert_eq!(global_warmup(&[(20, None), (20, None)]), 40);
    }

    #[test]
    fn step_counts_per_schedule() {
        let u = [6, 3, 3];
        assert_eq!(counts(&plan(Schedule::Weighted, &u, None, 0), 3), [6, 3, 3]);
        assert_eq!(counts(&plan(Schedule::TaskByTask, &u, None, 0), 3), [6, 3, 3]);
        assert_eq!(counts(&plan(Schedule::Alternating, &u, None, 0), 3), [4, 4, 4]);
        assert_eq!(plan(Schedule::Uniform, &u, None, 0).len(), 12);
        let acc = plan(Schedule::Accumulate, &u, None, 0);
        assert_eq!(acc.len(), 4);
        assert!(acc.iter().all(|s| s == &[0, 1, 2]));
        // Task-by-task runs each task's steps contiguously.
        let tbt: Vec<usize> = plan(Schedule::TaskByTask, &u, None, 3).into_iter().flatten().collect();
        let switches = tbt.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(switches, 2);
        assert_eq!(counts(&plan(Schedule::Weighted, &u, Some(6), 0), 3), [3, 2, 1]);
    }

    #[test]
    fn scaled_budgets_keep_every_task_while_the_total_allows() {
        // The paper's budgets cut to 200 updates: Pets (500 of 417,920) would get none by largest remainders.
        let paper = [20000, 10000, 10000, 500, 2500, 100_680, 123_640, 134_700, 15_900];
        let s = scale_budgets(&paper, 200);
        assert_eq!(s.iter().sum::<usize>(), 200);
        assert!(s.iter().all(|&u| u >= 1), "{s:?}");
        assert_eq!(scale_budgets(&[1000, 1, 1], 3), [1, 1, 1]);
        assert_eq!(scale_budgets(&[1000, 1, 1], 2).iter().sum::<usize>(), 2, "fewer updates than tasks: some get none");
        assert_eq!(scale_budgets(&[6, 3, 3], 6), [3, 2, 1]);
    }

    #[test]
    fn lr_warmup_cosine_and_wrap() {
        let l = LrSchedule { total: 10, warmup: 2, wrap_last: true };
        assert!((l.at(1) - 0.5).abs() < 1e-12);
        assert!((l.at(2) - 1.0).abs() < 1e-12);
        assert!(l.at(9) < 0.05);
        assert!((l.at(10) - 1.0).abs() < 1e-12, "Scenic's final-step wrap");
        let n = LrSchedule { wrap_last: false, ..l };
        assert!(n.at(10).abs() < 1e-12);
    }
}
