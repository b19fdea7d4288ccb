//! The admin client: `tessera token|usage|principal|role|api|audit|admin-key|check …`.
//!
//! Every command prints a table for people, or with `--json` one JSON object on stdout whose keys
//! are the proto field names (enum values as their proto names, timestamps as RFC 3339 UTC).
//! Errors go to stderr, one line each, and the exit code says what kind of failure it was:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (for `check`: the request is allowed) |
//! | 1 | `check`: the request is denied (and nothing else) |
//! | 2 | usage error: unknown or conflicting flags, bad values, unreadable files, nothing to update |
//! | 3 | unauthenticated: the admin key is missing or was rejected, or a client certificate is required |
//! | 4 | the server is unreachable |
//! | 5 | invalid argument: one line per field the server rejected |
//! | 6 | not found |
//! | 7 | refused: failed precondition, permission denied, resource exhausted, already exists, aborted |
//! | 8 | the server does not implement this call yet |
//! | 9 | the TLS handshake failed: untrusted CA, name mismatch, client certificate required or refused |
//! | 10 | any other error (an internal server error, a local failure) |
//!
//! Admin calls send `authorization: Bearer <admin key>` and, with `--actor`, `x-tessera-actor`.
//! The admin key is never printed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use secrecy::SecretString;
use serde_json::Value;

mod admin_key;
mod api;
mod audit;
mod check;
mod connect;
mod error;
mod events;
mod page;
mod parse;
mod policy;
mod portal;
mod principal;
mod record;
mod role;
mod table;
mod token;
mod usage;
mod webhook;

use error::CliError;
pub(crate) use error::error_chain;
use record::{Field, Record};

/// The help heading of [`ClientArgs`], by which `tessera serve --help` leaves them out.
pub const CLIENT_OPTIONS: &str = "Client options";

/// Connection and output flags shared by every admin command; they may follow the subcommand.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The Tessera server's gRPC URL.
    #[arg(
        long,
        env = "TESSERA_SERVER",
        default_value = "http://127.0.0.1:50051",
        value_parser = parse::server_url,
        global = true,
        help_heading = CLIENT_OPTIONS
    )]
    server: String,

    /// Admin key for token, usage, principal, role, api, audit and admin-key commands
    /// [default: the contents of ./tessera-admin.key].
    #[arg(
        long,
        env = "TESSERA_ADMIN_KEY",
        hide_env_values = true,
        value_parser = parse::secret,
        global = true,
        help_heading = CLIENT_OPTIONS
    )]
    admin_key: Option<SecretString>,

    /// Who is acting, recorded in the audit log (sent as `x-tessera-actor`).
    #[arg(
        long,
        env = "TESSERA_ACTOR",
        global = true,
        help_heading = CLIENT_OPTIONS
    )]
    actor: Option<String>,

    /// Print one JSON object on stdout instead of tables.
    #[arg(long, global = true, help_heading = CLIENT_OPTIONS)]
    json: bool,

    #[command(flatten)]
    tls: TlsArgs,
}

/// How to verify an `https://` server and, for mTLS, the certificate to present to it.
#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    /// PEM CA certificate(s) that signed the server's certificate, trusted instead of the
    /// system's CA certificates (`https://` servers only).
    #[arg(
        long,
        env = "TESSERA_CA_CERT",
        value_name = "FILE",
        global = true,
        help_heading = CLIENT_OPTIONS
    )]
    ca_cert: Option<PathBuf>,

    /// PEM client certificate to present (mTLS), with --client-key.
    #[arg(
        long,
        env = "TESSERA_CLIENT_CERT",
        value_name = "FILE",
        requires = "client_key",
        global = true,
        help_heading = CLIENT_OPTIONS
    )]
    client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "TESSERA_CLIENT_KEY",
        value_name = "FILE",
        requires = "client_cert",
        global = true,
        help_heading = CLIENT_OPTIONS
    )]
    client_key: Option<PathBuf>,
}

/// The admin subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create, list, show, change, rotate and revoke API tokens.
    // Boxed: by far the largest variant, and `main`'s command enum holds this one.
    #[command(subcommand)]
    Token(Box<token::TokenCommand>),
    /// Show usage statistics of one token or of all tokens of an owner.
    Usage(usage::UsageArgs),
    /// Create, change, show and list principals (the owners of tokens).
    #[command(subcommand)]
    Principal(principal::PrincipalCommand),
    /// Create, replace, show, list and delete a tenant's roles.
    #[command(subcommand)]
    Role(role::RoleCommand),
    /// Switch a tenant's API online or offline, or show its status.
    #[command(subcommand)]
    Api(api::ApiCommand),
    /// List admin mutations from the audit log, oldest first.
    Audit(audit::AuditArgs),
    /// Create, list, show and revoke admin keys (each with a role and its tenants).
    #[command(subcommand)]
    AdminKey(admin_key::AdminKeyCommand),
    /// Ask the server whether a token may do something (exit 0 allowed, 1 denied).
    // Boxed: its many flags would make every Command as large.
    Check(Box<check::CheckArgs>),
    /// Show or replace a tenant's token policy (lifetimes, owner limit, allowed permissions,
    /// allowlists).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Follow lifecycle events (token.created, token.revoked, token.expiring, …) as they commit.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Create, list, change and delete webhooks, and show their deliveries.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Open a self-service portal URL for a principal; show or set the portal's branding.
    #[command(subcommand)]
    Portal(portal::PortalCommand),
}

/// Runs one admin command and prints its result or its error.
pub async fn run(client: ClientArgs, command: Command) -> ExitCode {
    let outcome = match command {
        Command::Token(command) => token::run(&client, *command).await,
        Command::Usage(args) => usage::run(&client, args).await,
        Command::Principal(command) => principal::run(&client, command).await,
        Command::Role(command) => role::run(&client, command).await,
        Command::Api(command) => api::run(&client, command).await,
        Command::Audit(args) => audit::run(&client, args).await,
        Command::AdminKey(command) => admin_key::run(&client, command).await,
        Command::Check(args) => check::run(&client, *args).await,
        Command::Policy(command) => policy::run(&client, command).await,
        Command::Events(command) => events::run(&client, command).await,
        Command::Webhook(command) => webhook::run(&client, command).await,
        Command::Portal(command) => portal::run(&client, command).await,
    };
    match outcome.and_then(|report| report.print(client.json)) {
        Ok(exit_code) => exit_code,
        Err(error) => error.print(&client.server),
    }
}

/// What a command answers: a JSON object for `--json`, text for people, and whether `check`
/// denied.
struct Report {
    json: Value,
    human: String,
    denied: bool,
    /// The command printed its answer itself as it came (`events watch`).
    quiet: bool,
}

impl Report {
    fn new(json: Value, human: String) -> Self {
        Self {
            json,
            human,
            denied: false,
            quiet: false,
        }
    }

    fn quiet(self) -> Self {
        Self {
            quiet: true,
            ..self
        }
    }

    /// `{"<name>": {...}}` for `--json`, the record's table for people: the answer of the RPCs
    /// that return one message.
    fn single(name: &'static str, record: Option<Record>) -> Self {
        let human = record.as_ref().map(table::document).unwrap_or_default();
        let json = Record::default()
            .with(name, Field::Message(record))
            .to_json();
        Self::new(json, human)
    }

    fn denied(self) -> Self {
        Self {
            denied: true,
            ..self
        }
    }

    /// Writes the report to stdout; a reader that stopped early (`| head`) is no failure.
    fn print(self, json: bool) -> Result<ExitCode, CliError> {
        if self.quiet {
            return Ok(ExitCode::from(error::exit::OK));
        }
        // JSON escapes control characters itself; text for people goes through `printable`,
        // which also covers lines written outside the tables.
        let text = if json {
            self.json.to_string()
        } else {
            table::printable(&self.human, table::Newlines::Keep)
        };
        let mut stdout = std::io::stdout().lock();
        let written = writeln!(stdout, "{}", text.trim_end()).and_then(|()| stdout.flush());
        if let Err(error) = written
            && error.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(CliError::Local(
                anyhow::Error::new(error).context("cannot write to stdout"),
            ));
        }
        let exit_code = if self.denied {
            error::exit::DENIED
        } else {
            error::exit::OK
        };
        Ok(ExitCode::from(exit_code))
    }
}
