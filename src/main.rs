//! The `polyflow` binary: parse arguments, run the command, exit with its documented code
//! (see `polyflow::cli::exit`).

use clap::Parser;

fn main() {
    let cli = polyflow::cli::Cli::parse();
    let code = polyflow::cli::run(cli, &polyflow::stages::registry());
    std::process::exit(code);
}
