//! `tessera webhook create|list|update|delete|deliveries`: a tenant's webhooks, which receive its
//! lifecycle events signed (Standard Webhooks), and what became of each delivery.

use std::fmt::Write;

use tessera::proto;

use super::connect::admin_client;
use super::error::{CliError, answer};
use super::page::{self, Page, PageArgs};
use super::record::{Field, Record};
use super::{ClientArgs, Report, table};

/// Columns of `webhook list`.
const LIST_COLUMNS: &[&str] = &[
    "id",
    "url",
    "event_types",
    "disabled",
    "failing_since",
    "secret_hint",
];

/// Columns of `webhook deliveries`.
const DELIVERY_COLUMNS: &[&str] = &[
    "id",
    "event_id",
    "event_type",
    "state",
    "attempts",
    "last_status_code",
    "last_error",
    "next_attempt_at",
];

#[derive(Debug, clap::Subcommand)]
pub enum WebhookCommand {
    /// Create a webhook and print its signing secret (`whsec_…`), once.
    Create {
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
        /// Where deliveries are POSTed: an http or https URL.
        #[arg(long)]
        url: String,
        /// An event type it receives (`token.created`, …), repeatable or comma-separated
        /// [default: every type].
        #[arg(long = "event-type", value_name = "TYPE", value_delimiter = ',')]
        event_types: Vec<String>,
        /// Free text, at most 1024 characters.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List a tenant's webhooks, oldest first.
    List {
        /// Tenant [default: the server's default tenant].
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Change a webhook: only what the flags name.
    Update(UpdateArgs),
    /// Delete a webhook and its deliveries.
    Delete {
        /// The webhook id (`wh_…`).
        id: String,
    },
    /// A webhook's deliveries, newest first.
    Deliveries {
        /// The webhook id (`wh_…`).
        id: String,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// The webhook id (`wh_…`).
    id: String,
    /// A new URL.
    #[arg(long)]
    url: Option<String>,
    /// The event types it receives, repeatable or comma-separated (replaces them).
    #[arg(long = "event-type", value_name = "TYPE", value_delimiter = ',')]
    event_types: Vec<String>,
    /// Receive every event type.
    #[arg(long, conflicts_with = "event_types")]
    all_event_types: bool,
    /// A new description.
    #[arg(long)]
    description: Option<String>,
    /// Stop deliveries (pending ones fail).
    #[arg(long, conflicts_with = "enable")]
    disable: bool,
    /// Resume deliveries (and clear failing).
    #[arg(long)]
    enable: bool,
}

impl UpdateArgs {
    /// The request, or None when no flag names a change.
    fn request(self) -> Option<proto::UpdateWebhookRequest> {
        let mut paths = Vec::new();
        if self.url.is_some() {
            paths.push("url".to_owned());
        }
        if !self.event_types.is_empty() || self.all_event_types {
            paths.push("event_types".to_owned());
        }
        if self.description.is_some() {
            paths.push("description".to_owned());
        }
        if self.disable || self.enable {
            paths.push("disabled".to_owned());
        }
        if paths.is_empty() {
            return None;
        }
        Some(proto::UpdateWebhookRequest {
            id: self.id,
            url: self.url.unwrap_or_default(),
            event_types: self.event_types,
            description: self.description.unwrap_or_default(),
            disabled: self.disable,
            update_mask: Some(prost_types::FieldMask { paths }),
        })
    }
}

pub(super) async fn run(args: &ClientArgs, command: WebhookCommand) -> Result<Report, CliError> {
    // Checked before connecting: nothing to update is a usage error, whatever the server.
    let command = match command {
        WebhookCommand::Update(update) => {
            let request = update.request().ok_or_else(|| {
                CliError::Usage(
                    "nothing to update: give --url, --event-type, --all-event-types, \
                     --description, --disable or --enable"
                        .to_owned(),
                )
            })?;
            Ok(request)
        }
        other => Err(other),
    };
    let mut client = admin_client(args).await?;
    let command = match command {
        Ok(request) => {
            let webhook = answer("UpdateWebhook", client.update_webhook(request).await)?.webhook;
            return Ok(webhook_report(webhook.as_ref(), "updated", None));
        }
        Err(command) => command,
    };
    match command {
        WebhookCommand::Create {
            tenant,
            url,
            event_types,
            description,
        } => {
            let request = proto::CreateWebhookRequest {
                tenant: tenant.unwrap_or_default(),
                url,
                event_types,
                description,
            };
            let created = answer("CreateWebhook", client.create_webhook(request).await)?;
            Ok(webhook_report(
                created.webhook.as_ref(),
                "created",
                Some(created.secret),
            ))
        }
        WebhookCommand::List { tenant, page } => {
            let tenant = tenant.unwrap_or_default();
            let collected = page
                .collect(async |page_token| {
                    let request = proto::ListWebhooksRequest {
                        tenant: tenant.clone(),
                        page_size: page.page_size(),
                        page_token,
                    };
                    let response = answer("ListWebhooks", client.list_webhooks(request).await)?;
                    Ok(Page::of(&response.webhooks, response.next_page_token))
                })
                .await?;
            Ok(page::report(
                "webhooks",
                collected,
                LIST_COLUMNS,
                Record::clone,
            ))
        }
        WebhookCommand::Delete { id } => {
            let request = proto::DeleteWebhookRequest { id };
            let webhook = answer("DeleteWebhook", client.delete_webhook(request).await)?.webhook;
            Ok(webhook_report(webhook.as_ref(), "deleted", None))
        }
        WebhookCommand::Deliveries { id, page } => {
            let collected = page
                .collect(async |page_token| {
                    let request = proto::ListWebhookDeliveriesRequest {
                        webhook_id: id.clone(),
                        page_size: page.page_size(),
                        page_token,
                    };
                    let response = answer(
                        "ListWebhookDeliveries",
                        client.list_webhook_deliveries(request).await,
                    )?;
                    Ok(Page::of(&response.deliveries, response.next_page_token))
                })
                .await?;
            Ok(page::report(
                "deliveries",
                collected,
                DELIVERY_COLUMNS,
                Record::clone,
            ))
        }
        // Answered above.
        WebhookCommand::Update(_) => Err(CliError::Usage("nothing to update".to_owned())),
    }
}

/// `{"webhook": {...}}` plus the secret when the response shows it (once); for people, what was
/// done, the webhook's table, and the secret with a warning to store it.
fn webhook_report(webhook: Option<&proto::Webhook>, done: &str, secret: Option<String>) -> Report {
    let record = webhook.map(Record::from);
    let mut human = String::new();
    if let Some(webhook) = webhook {
        // Writing to a String cannot fail.
        let _ = writeln!(human, "{done} webhook {} ({})", webhook.id, webhook.url);
    }
    human.push_str(&record.as_ref().map(table::document).unwrap_or_default());
    let mut json = Record::default().with("webhook", Field::Message(record));
    if let Some(secret) = secret.filter(|secret| !secret.is_empty()) {
        let _ = write!(
            human,
            "\n\nsecret: {secret}\nstore it now; it will not be shown again (it verifies the \
             webhook-signature header of every delivery)"
        );
        json = json.with("secret", Field::Text(secret));
    }
    Report::new(json.to_json(), human)
}
