//! `tessera audit`: the admin mutations, oldest first.

use tessera::proto;

use super::connect::admin_client;
use super::error::{CliError, answer};
use super::page::{self, Page, PageArgs};
use super::record::Record;
use super::{ClientArgs, Report};

/// Columns of `audit`.
const COLUMNS: &[&str] = &[
    "id",
    "time",
    "actor",
    "admin_key",
    "action",
    "tenant",
    "token_id",
    "principal_id",
    "summary",
];

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only this tenant's events [default: every tenant's].
    #[arg(long)]
    tenant: Option<String>,
    /// Only events about this token.
    #[arg(long = "token", value_name = "TOKEN_ID", default_value = "")]
    token_id: String,
    /// Only events about this principal.
    #[arg(long = "principal", value_name = "PRINCIPAL_ID", default_value = "")]
    principal_id: String,
    /// Only events of this action (`token.create`, `console.sign_in`, …).
    #[arg(long, default_value = "")]
    action: String,
    /// Only events of this actor, as entries name it (`console:alice`, `adk_…`); not
    /// `--actor`, which names who runs this command.
    #[arg(long = "by", value_name = "ACTOR", default_value = "")]
    by: String,

    #[command(flatten)]
    page: PageArgs,
}

pub(super) async fn run(args: &ClientArgs, audit: AuditArgs) -> Result<Report, CliError> {
    let mut client = admin_client(args).await?;
    let page = audit
        .page
        .collect(async |page_token| {
            let request = proto::ListAuditEventsRequest {
                tenant: audit.tenant.clone().unwrap_or_default(),
                page_size: audit.page.page_size(),
                page_token,
                token_id: audit.token_id.clone(),
                principal_id: audit.principal_id.clone(),
                action: audit.action.clone(),
                actor: audit.by.clone(),
            };
            let response = answer("ListAuditEvents", client.list_audit_events(request).await)?;
            Ok(Page::of(&response.events, response.next_page_token))
        })
        .await?;
    Ok(page::report("events", page, COLUMNS, Record::clone))
}
