//! The `tessera` binary: the server (`tessera serve`) and the admin client for it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
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
    /// Load-test servers over gRPC: cached Check against the no-op floor and a cache-off server.
    Bench(bench::BenchArgs),
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
        Command::Bench(args) => runtime.block_on(bench::run(args)),
        Command::Admin(command) => runtime.block_on(cli::run(parsed.client, command)),
    }
}
