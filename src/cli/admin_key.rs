//! `tessera admin-key create|list|get|revoke`: admin keys as managed credentials, each with a
//! role and the tenants it may act in. Rotating one without downtime: create its successor,
//! switch the client to it, revoke the old one.

use std::fmt::Write;

use prost_types::{Duration, Timestamp};
use tessera::proto;

use super::connect::admin_client;
use super::error::{CliError, answer};
use super::page::{self, Page, PageArgs};
use super::record::{Field, Record};
use super::{ClientArgs, Report, parse, table};

/// Columns of `admin-key list`.
const LIST_COLUMNS: &[&str] = &[
    "id",
    "name",
    "role",
    "tenants",
    "expires_at",
    "last_used_at",
    "revoked_at",
    "secret_hint",
];

#[derive(Debug, clap::Subcommand)]
pub enum AdminKeyCommand {
    /// Create an admin key and print its secret, once.
    Create(CreateArgs),
    /// List the admin keys within this key's tenants, oldest first.
    List {
        /// Also list revoked keys.
        #[arg(long)]
        include_revoked: bool,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one admin key.
    Get {
        /// The admin key id (`adk_…`).
        id: String,
    },
    /// Revoke an admin key on every replica: immediate and irreversible.
    Revoke {
        /// The admin key id (`adk_…`).
        id: String,
    },
}

/// The roles `--role` takes, as the proto's `AdminRole` names them without their prefix.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Role {
    /// Reads only: get, list, usage, audit.
    Viewer,
    /// Also tokens, principals and roles in its tenants.
    TokenManager,
    /// Also API status, and admin keys no wider than its own.
    Owner,
}

impl From<Role> for proto::AdminRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Viewer => Self::Viewer,
            Role::TokenManager => Self::TokenManager,
            Role::Owner => Self::Owner,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Display name, 1 to 128 characters.
    #[arg(long)]
    name: String,

    /// What the key may do.
    #[arg(long, value_enum)]
    role: Role,

    /// A tenant the key may act in, repeatable or comma-separated [default: every tenant, which
    /// only a key of every tenant may create].
    #[arg(long = "tenant", value_name = "TENANT", value_delimiter = ',')]
    tenants: Vec<String>,

    /// Lifetime from now, e.g. 90d, at most 5 years [default: the key does not expire].
    #[arg(long, value_parser = parse::duration, conflicts_with = "expires_at")]
    ttl: Option<Duration>,

    /// Absolute expiry, RFC 3339, e.g. 2030-01-31T00:00:00Z.
    #[arg(long, value_parser = parse::timestamp)]
    expires_at: Option<Timestamp>,
}

pub(super) async fn run(args: &ClientArgs, command: AdminKeyCommand) -> Result<Report, CliError> {
    let mut client = admin_client(args).await?;
    match command {
        AdminKeyCommand::Create(create) => {
            let request = proto::CreateAdminKeyRequest {
                name: create.name,
                tenants: create.tenants,
                role: proto::AdminRole::from(create.role).into(),
                expires_at: create.expires_at,
                ttl: create.ttl,
            };
            let created = answer("CreateAdminKey", client.create_admin_key(request).await)?;
            Ok(key_report(
                created.admin_key.as_ref(),
                "created",
                Some(created.secret),
            ))
        }
        AdminKeyCommand::List {
            include_revoked,
            page,
        } => {
            let collected = page
                .collect(async |page_token| {
                    let request = proto::ListAdminKeysRequest {
                        page_size: page.page_size(),
                        page_token,
                        include_revoked,
                    };
                    let response = answer("ListAdminKeys", client.list_admin_keys(request).await)?;
                    Ok(Page::of(&response.admin_keys, response.next_page_token))
                })
                .await?;
            Ok(page::report(
                "admin_keys",
                collected,
                LIST_COLUMNS,
                Record::clone,
            ))
        }
        AdminKeyCommand::Get { id } => {
            let request = proto::GetAdminKeyRequest { id };
            let key = answer("GetAdminKey", client.get_admin_key(request).await)?.admin_key;
            Ok(key_report(key.as_ref(), "", None))
        }
        AdminKeyCommand::Revoke { id } => {
            let request = proto::RevokeAdminKeyRequest { id };
            let key = answer("RevokeAdminKey", client.revoke_admin_key(request).await)?.admin_key;
            Ok(key_report(key.as_ref(), "revoked", None))
        }
    }
}

/// `{"admin_key": {...}}` plus the secret when the response shows it (once); for people, what
/// was done, the key's table, and the secret with a warning to store it.
fn key_report(key: Option<&proto::AdminKey>, done: &str, secret: Option<String>) -> Report {
    let record = key.map(Record::from);
    let mut human = String::new();
    if let Some(key) = key
        && !done.is_empty()
    {
        // Writing to a String cannot fail.
        let _ = writeln!(human, "{done} admin key {} ({})", key.id, key.name);
    }
    human.push_str(&record.as_ref().map(table::document).unwrap_or_default());
    let mut json = Record::default().with("admin_key", Field::Message(record));
    if let Some(secret) = secret.filter(|secret| !secret.is_empty()) {
        let _ = write!(
            human,
            "\n\nsecret: {secret}\nstore it now; it will not be shown again"
        );
        json = json.with("secret", Field::Text(secret));
    }
    Report::new(json.to_json(), human)
}
