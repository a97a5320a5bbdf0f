//! The `polyflow` command line: argument parsing, one function per command, reporters, exit codes.

mod args;
mod checkout;
mod checks;
mod compare;
mod current;
mod error;
mod execute;
pub mod exit;
mod export;
mod gc;
mod git;
mod html;
mod knobs;
mod materialize;
mod open;
mod out;
mod params;
mod push;
pub mod report;
mod runs;
mod show;
mod status;
mod verify;

use crate::exec::{self, RunOptions};
use crate::graph::{self, Graph};
use crate::spec::ExecutorKind;
use crate::spec::{self, SpecError};
use crate::stage::{FailureClass, Problem, Registry};
use crate::store::{Store, StoreError};
use clap::{Args, Parser, Subcommand};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use args::*;
pub use checks::{env_of, forced_nodes, load_graph, pipeline_notes, preflight};
pub use error::CliError;
use execute::cmd_run;
use html::cmd_report;
use materialize::materialize;
pub(crate) use open::lock_store;
use open::stop_code;
pub use open::{open_cache, read_store};

/// Runs the parsed command with the given registry; returns the exit code.
pub fn run(cli: Cli, reg: &Registry) -> i32 {
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // Decoders' own logs stay out (symphonia's "probe reach EOF"): polyflow reports the file and what to do.
    // `RUST_LOG` replaces this filter.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},symphonia=off")));
    // Colours on a terminal only, never into a file or pipe, and never with NO_COLOR set.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
    // A standard error gone (`run … 2>&1 | head`) drops log lines: no complaint of its own, which would panic there.
    // Each line goes where programs' output goes: above `run`'s progress bars, which would otherwise erase it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(out::LogLine::default)
        .log_internal_errors(false)
        .try_init();
    for w in knobs::unknown_values(|k| std::env::var(k).ok()) {
        tracing::warn!("{w}");
    }
    let verbose = cli.verbose > 0;
    // Machine output asked for: an error is also a JSON line on stdout, so a consumer gets JSON either way.
    let json = match &cli.command {
        Command::Run(a) => a.plan.json,
        Command::Plan(a) => a.plan.json,
        Command::Status(a) => a.json,
        Command::Params(a) => a.json,
        Command::Compare(a) => a.json,
        Command::Runs(a) => a.json,
        Command::Gc(a) => a.json,
        Command::Verify(a) => a.json,
        _ => false,
    };
    let mut cli = cli;
    // A command run from a subfolder of a project uses the project's store, as git finds its repository.
    if let Some((store, file)) = cli.command.store_of() {
        if let Some(found) = open::discover_store(store, file.as_deref()) {
            *store = found;
        }
    }
    let result = match cli.command {
        Command::Run(a) if a.dry_run => plan(a.plan, false, a.no_publish, verbose, reg),
        Command::Run(a) => cmd_run(a, reg, verbose),
        Command::Plan(a) => plan(a.plan, a.exit_code, a.no_publish, verbose, reg),
        Command::Status(a) => status::status(a.common, a.nodes, a.json, a.why, a.stale, reg),
        Command::Dag(a) => status::dag(a.common, &a.nodes, &a.format, reg),
        Command::Report(a) => cmd_report(a, reg),
        Command::Show(a) => show::show(a.common, &a.node, reg),
        Command::Compare(a) => compare::compare(a, reg),
        Command::Runs(a) => runs::runs(a, reg),
        Command::Checkout(a) => checkout::checkout(a, reg),
        Command::Push(a) => push::push(a.common, a.nodes, reg),
        Command::Gc(GcArgs { profile: Some(p), .. }) | Command::Verify(VerifyArgs { profile: Some(p), .. }) => Err(CliError::Other(
            format!(
                "error: `gc` and `verify` take no --profile: they cover every profile of the pipelines named (what `--profile {p}` computes among them); leave it out"
            ),
            exit::USAGE,
        )),
        Command::Gc(a) => {
            if a.json {
                out::text_on_stderr();
            }
            let overlay = spec::Overlay { configs: a.config.clone(), sets: a.set.clone() };
            match &a.cache {
                Some(dir) => gc::gc_cache(&a.files, &a.store, dir, a.keep_days, &a.backend, &overlay, (a.yes, a.json), reg),
                None => gc::gc(&a.files, &a.store, &a.backend, &overlay, gc::GcHow { yes: a.yes, wait: a.wait, verbose, all_runs: a.all_runs, this_branch: a.this_branch, json: a.json }, reg),
            }
        }
        Command::Verify(a) => {
            if a.json {
                out::text_on_stderr();
            }
            let overlay = spec::Overlay { configs: a.config.clone(), sets: a.set.clone() };
            let only = (!a.files.is_empty()).then_some((&a.files[..], &a.backend[..], &overlay));
            match &a.cache {
                Some(dir) => verify::verify_cache(dir, &a.store, only, a.json, reg),
                None => verify::verify(&a.store, only, a.json, reg),
            }
        }
        Command::Params(a) => params::params(a.common, a.json, a.wait, reg),
        Command::Kinds => params::kinds(reg),
        Command::BenchModel(a) => {
            crate::bench::model::bench_model(a).map(|()| 0).map_err(|e| CliError::Other(format!("error: {e:#}"), exit::USAGE))
        }
        Command::BenchFbank(a) => {
            crate::bench::fbank::bench_fbank(a).map(|()| 0).map_err(|e| CliError::Other(format!("error: {e:#}"), exit::USAGE))
        }
        #[cfg(feature = "video")]
        Command::BenchVideo(a) => {
            crate::bench::video::bench_video(a).map(|()| 0).map_err(|e| CliError::Other(format!("error: {e:#}"), exit::USAGE))
        }
        #[cfg(not(feature = "video"))]
        Command::BenchVideo { .. } => Err(CliError::Other(
            "error: `bench-video` decodes video files, and this build has no video decoder: build with `--features video` \
             (FFmpeg's development libraries; see the README)"
                .into(),
            exit::USAGE,
        )),
        Command::BenchLoader(a) => {
            crate::bench::loader::bench_loader(a).map(|()| 0).map_err(|e| CliError::Other(format!("error: {e:#}"), exit::USAGE))
        }
        Command::ExecNode { dir } => {
            use exec::slurm::job::{run_job, JobOutcome};
            // The job's log is its stderr.
            Ok(match run_job(&dir, reg, &|line| out::errln!("{line}")) {
                JobOutcome::Done => exit::OK,
                JobOutcome::Failed(m) => {
                    out::errln!("error: {m}");
                    exit::NODE_FAILED
                }
                JobOutcome::BadInput(m) => {
                    out::errln!("error: {m}");
                    exit::USAGE
                }
            })
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // A store's errors name a path first (`.polyflow/index: …`): marked as errors as the others are.
            match &e {
                CliError::Store(_) => out::err_line(&format!("error: {e:#}")),
                _ => out::err_line(&format!("{e:#}")),
            }
            if json {
                out::line(&e.json().to_string());
            }
            e.code()
        }
    }
}

/// `plan`, or `run --dry-run` (`no_publish`: its `--no-publish`, said on the `Cache` line).
fn plan(a: PlanArgs, exit_code: bool, no_publish: bool, verbose: bool, reg: &Registry) -> Result<i32, CliError> {
    let executor = executor_kind(a.executor.as_deref());
    let pending = status::plan(a.common, a.nodes, a.force, a.force_all, (a.jobs, a.devices, executor), (a.json, no_publish), verbose, reg)?;
    Ok(if exit_code && pending > 0 { exit::WOULD_RUN } else { exit::OK })
}

/// `--executor`, if given.
fn executor_kind(e: Option<&str>) -> Option<ExecutorKind> {
    e.map(|e| if e == "slurm" { ExecutorKind::Slurm } else { ExecutorKind::Local })
}
