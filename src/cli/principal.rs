//! `tessera principal upsert|get`.

use tessera::proto;

use super::connect::admin_client;
use super::error::{CliError, answer};
use super::record::Record;
use super::{ClientArgs, Report};

#[derive(Debug, clap::Subcommand)]
pub enum PrincipalCommand {
    /// Create or replace a principal: its whole permission set, disabled flag and rate limit.
    Upsert {
        /// The principal's id in the platform.
        id: String,
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
        /// A permission, repeatable or comma-separated; the ceiling of all its tokens.
        #[arg(long = "permission", value_name = "PERMISSION", value_delimiter = ',')]
        permissions: Vec<String>,
        /// Disable the principal, which stops all its tokens at once.
        #[arg(long)]
        disabled: bool,
        /// Requests per minute shared by all its tokens [default: no shared limit].
        #[arg(long, value_name = "PER_MINUTE")]
        rate_limit: Option<u32>,
    },
    /// Show a principal.
    Get {
        /// The principal's id.
        id: String,
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
    },
}

pub(super) async fn run(args: &ClientArgs, command: PrincipalCommand) -> Result<Report, CliError> {
    let mut client = admin_client(args).await?;
    let principal = match command {
        PrincipalCommand::Upsert {
            id,
            tenant,
            permissions,
            disabled,
            rate_limit,
        } => {
            let request = proto::UpsertPrincipalRequest {
                tenant: tenant.unwrap_or_default(),
                id,
                permissions,
                disabled,
                rate_limit_per_minute: rate_limit,
            };
            answer("UpsertPrincipal", client.upsert_principal(request).await)?.principal
        }
        PrincipalCommand::Get { id, tenant } => {
            let request = proto::GetPrincipalRequest {
                tenant: tenant.unwrap_or_default(),
                id,
            };
            answer("GetPrincipal", client.get_principal(request).await)?.principal
        }
    };
    Ok(Report::single(
        "principal",
        principal.as_ref().map(Record::from),
    ))
}
