//! `tessera api online|offline|status`.

use tessera::proto;

use super::connect::admin_client;
use super::error::{CliError, answer};
use super::record::Record;
use super::{ClientArgs, Report};

#[derive(Debug, clap::Subcommand)]
pub enum ApiCommand {
    /// Let Checks for the tenant through again.
    Online {
        /// Tenant, or `*` for the global switch [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Make every Check for the tenant answer API_OFFLINE (503); tokens stay as they are.
    Offline {
        /// Tenant, or `*` for the global switch [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
        /// Shown to end clients while offline, at most 1024 characters.
        #[arg(long)]
        message: Option<String>,
    },
    /// Show whether the tenant's API is online.
    Status {
        /// Tenant, or `*` for the global switch [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
    },
}

pub(super) async fn run(args: &ClientArgs, command: ApiCommand) -> Result<Report, CliError> {
    let mut client = admin_client(args).await?;
    let status = match command {
        ApiCommand::Online { tenant } => {
            let request = set_request(tenant, true, None);
            answer("SetApiStatus", client.set_api_status(request).await)?.status
        }
        ApiCommand::Offline { tenant, message } => {
            let request = set_request(tenant, false, message);
            answer("SetApiStatus", client.set_api_status(request).await)?.status
        }
        ApiCommand::Status { tenant } => {
            let request = proto::GetApiStatusRequest {
                tenant: tenant.unwrap_or_default(),
            };
            answer("GetApiStatus", client.get_api_status(request).await)?.status
        }
    };
    Ok(Report::single("status", status.as_ref().map(Record::from)))
}

fn set_request(
    tenant: Option<String>,
    online: bool,
    message: Option<String>,
) -> proto::SetApiStatusRequest {
    proto::SetApiStatusRequest {
        tenant: tenant.unwrap_or_default(),
        online,
        message: message.unwrap_or_default(),
    }
}
