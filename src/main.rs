//! The `tessera` binary: the server (`tessera serve`) and the admin client for it. The load
//! generator is a binary of its own, `tessera-bench` (`bench/`).

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod cli;
mod serve;

use cli::CLIENT_OPTIONS;

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

/// The command line as `Cli::parse` would read it, except that `serve --help` does not list the
/// client's options: they are global so that they may follow any admin subcommand, and clap
/// copies global arguments into every subcommand, `serve` included, which ignores them.
fn parse() -> Cli {
    let mut command = Cli::command();
    // Copies the global arguments into the subcommands, where they can then be hidden.
    command.build();
    let command = command.mut_subcommand("serve", |serve| {
        serve.mut_args(|argument| {
            if argument.get_help_heading() == Some(CLIENT_OPTIONS) {
                argument.hide(true)
            } else {
                argument
            }
        })
    });
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
        Command::Admin(command) => runtime.block_on(cli::run(parsed.client, command)),
    }
}
