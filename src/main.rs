//! The `tessera` binary: the server (`tessera serve`) and the admin client for it. The load
//! generator is a binary of its own, `tessera-bench` (`bench/`).

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod backup;
mod cli;
mod serve;

use cli::CLIENT_OPTIONS;

/// mimalloc rather than glibc's malloc: a Check allocates a few dozen small, short-lived blocks
/// across two threads, which mimalloc's per-thread free lists serve in fewer instructions
/// (measured in BENCHMARKS.md, "Check at the floor").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Copy the SQLite database the server settings name to a new FILE, consistently, while
    /// servers keep serving (for Postgres, use pg_dump).
    Backup(backup::BackupArgs),
    #[command(flatten)]
    Admin(cli::Command),
}

/// The command line as `Cli::parse` would read it, except that `serve --help` and `backup --help`
/// do not list the client's options: they are global so that they may follow any admin
/// subcommand, and clap copies global arguments into every subcommand, these included, which
/// ignore them.
fn parse() -> Cli {
    let mut command = Cli::command();
    // Copies the global arguments into the subcommands, where they can then be hidden.
    command.build();
    let hide_client_options = |subcommand: clap::Command| {
        subcommand.mut_args(|argument| {
            if argument.get_help_heading() == Some(CLIENT_OPTIONS) {
                argument.hide(true)
            } else {
                argument
            }
        })
    };
    let command = command
        .mut_subcommand("serve", hide_client_options)
        .mut_subcommand("backup", hide_client_options);
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

fn main() -> ExitCode {
    let parsed = parse();
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
        Command::Backup(args) => runtime.block_on(backup::run(args)),
        Command::Admin(command) => runtime.block_on(cli::run(parsed.client, command)),
    }
}
