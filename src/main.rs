//! The `polyflow` binary: parse arguments, run the command, exit with its documented code
//! (see `polyflow::cli::exit`).

use clap::Parser;

/// mimalloc instead of the system allocator: training allocates and frees many large tensors per step.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = polyflow::cli::Cli::parse();
    let code = polyflow::cli::run(cli, &polyflow::stages::registry());
    std::process::exit(code);
}
