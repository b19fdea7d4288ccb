//! The `tessera` binary: the server (`tessera serve`) and the admin client for it. The load
//! generator is a binary of its own, `tessera-bench` (`bench/`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;
mod serve;

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "API-token authorization: the server and its admin client"
)]
struct Cli {
    #[command(flatten)]
    client: cli::ClientArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (settings: defaults, then --config TOML, then TESSERA_* variables).
    Serve(serve::ServeArgs),
    #[command(flatten)]
    Admin(cli::Command),
}

fn main() -> ExitCode {
    let parsed = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match parsed.command {
        Command::Serve(args) => runtime.block_on(serve::run(args)),
        Command::Admin(command) => runtime.block_on(cli::run(parsed.client, command)),
    }
}
