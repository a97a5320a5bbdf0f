//! The `polyflow` binary: parse arguments, run the command, exit with its documented code
//! (see `polyflow::cli::exit`).

use clap::Parser;

/// mimalloc instead of the system allocator: training allocates and frees many large tensors per step.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (the same index in its v2 and v3 headers).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // Never hand freed memory back to the OS while the process lives: a training step frees and
    // re-allocates the same tensor sizes, and purged pages come back zero-filled by the kernel
    // (`clear_page`), which `perf` measured at 18 % of a ViT-Ti train step (+19 % train img/s without).
    // SAFETY: setting an option is a plain store in mimalloc; it is done before any thread starts.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // Shards stay open while a split is read (a paper-scale video cache has thousands): raise the soft limit
    // on open files to the hard one (a no-op where it is already there).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let cli = match polyflow::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Asked for JSON, a misspelt option is a JSON error line too (on stdout, as every exit 2's), then
            // clap's own message on stderr; `--help` and `--version` are not errors.
            let code = e.exit_code();
            if e.use_stderr()
                && std::env::args_os().map(|a| a.to_string_lossy().into_owned()).any(|a| a == "--json" || a.starts_with("--json="))
                && json_possible()
            {
                let message = e.render().to_string();
                println!("{}", serde_json::json!({"event": "error", "exit": code, "message": message.trim_end()}));
            }
            e.exit()
        }
    };
    // A reader that stops early (`polyflow plan … | head`) ends a command that only reports quietly, as it does
    // any Unix tool, instead of a panic on the next line printed (Rust ignores SIGPIPE by default). Not one that
    // computes or writes (`run`, `gc`, …): SIGPIPE would end it between two steps of its work.
    if !cli.runs_nodes() {
        // SAFETY: restoring a signal's default disposition, before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let code = polyflow::cli::run(cli, &polyflow::stages::registry());
    std::process::exit(code);
}

/// Whether the command line names a subcommand that takes `--json`, or none that exists (a misspelt command
/// with `--json` still gets its JSON error line; `kinds --json`, of a command without JSON output, does not).
fn json_possible() -> bool {
    use clap::CommandFactory;
    let cmd = polyflow::cli::Cli::command();
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let Some(sub) = args.iter().find(|a| !a.starts_with('-')) else { return true };
    match cmd.find_subcommand(sub) {
        Some(s) => s.get_arguments().any(|a| a.get_long() == Some("json")),
        None => true,
    }
}
