//! Webhooks (issue 17): CreateWebhook, ListWebhooks, UpdateWebhook, DeleteWebhook and
//! ListWebhookDeliveries. A webhook belongs to a tenant: a key may manage only its tenants'
//! webhooks, and another tenant's webhook by id is NOT_FOUND. Its secret is shown once and
//! stored sealed with the master key (src/domain/webhook.rs); without a master key no webhook is
//! created, as no token may require signatures (`AdminError::WebhooksUnavailable`).

use chrono::Utc;
use secrecy::SecretString;

use super::{Actor, Admin, AdminError, MAX_PAGE_SIZE, Page, audit};
use crate::domain::event::EventType;
use crate::domain::fields::{Description, Tenant};
use crate::domain::model::AuditEvent;
use crate::domain::webhook::{
    AddressRule, MAX_WEBHOOKS_PER_TENANT, NewWebhook, Webhook, WebhookChanges, WebhookDelivery,
    WebhookId, WebhookSecret, WebhookUrl,
};

/// A CreateWebhook as the admin layer takes it.
#[derive(Debug, Clone)]
pub struct CreateWebhook {
    pub tenant: Tenant,
    pub url: WebhookUrl,
    pub event_types: Vec<EventType>,
    pub description: Description,
}

/// A created webhook and its secret (`whsec_…`), which exists only here and in the response.
#[derive(Debug)]
pub struct IssuedWebhook {
    pub webhook: Webhook,
    pub secret: SecretString,
}

fn event(actor: &Actor, action: &str, webhook: &Webhook, summary: String) -> AuditEvent {
    let mut event = audit(actor, action, webhook.tenant.as_str(), Utc::now());
    event.summary = summary;
    event
}

fn describe(webhook: &Webhook) -> String {
    let types = if webhook.event_types.is_empty() {
        "every event".to_owned()
    } else {
        webhook
            .event_types
            .iter()
            .map(|kind| kind.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The host only: a receiver's path or query may carry its own credential.
    format!(
        "webhook {} ({}) to {} for {types}",
        webhook.id,
        webhook.secret_hint,
        webhook.url.url().host_str().unwrap_or_default()
    )
}

impl Admin {
    /// Webhook URLs may name internal addresses (`TESSERA_WEBHOOK_ALLOW_PRIVATE_URLS`).
    pub fn with_webhook_rule(mut self, rule: AddressRule) -> Self {
        self.webhook_rule = rule;
        self
    }

    /// The rule webhook URLs are parsed under.
    pub fn webhook_rule(&self) -> AddressRule {
        self.webhook_rule
    }

    pub async fn create_webhook(
        &self,
        actor: &Actor,
        request: CreateWebhook,
    ) -> Result<IssuedWebhook, AdminError> {
        actor.require_tenant(&request.tenant)?;
        let master_key = self
            .master_key
            .as_ref()
            .ok_or(AdminError::WebhooksUnavailable)?;
        let now = Utc::now();
        let secret = WebhookSecret::generate();
        let id = WebhookId::generate();
        let webhook = Webhook {
            id: id.clone(),
            tenant: request.tenant,
            url: request.url,
            event_types: request.event_types,
            description: request.description,
            disabled: false,
            failing_since: None,
            secret_hint: secret.hint(),
            created_at: now,
            updated_at: now,
        };
        let sealed_secret = secret.seal(master_key, &id);
        let audit = event(
            actor,
            "webhook.create",
            &webhook,
            format!("created {}", describe(&webhook)),
        );
        let new = NewWebhook {
            webhook,
            sealed_secret,
        };
        let created = self
            .store
            .create_webhook(&new, MAX_WEBHOOKS_PER_TENANT, &audit)
            .await?;
        tracing::info!(webhook_id = %created.id, tenant = %created.tenant, "webhook created");
        Ok(IssuedWebhook {
            webhook: created,
            secret: secret.encoded(),
        })
    }

    /// A webhook the actor may see (else NOT_FOUND, as if it did not exist).
    pub async fn get_webhook(&self, actor: &Actor, id: &WebhookId) -> Result<Webhook, AdminError> {
        let webhook = self.store.get_webhook(id).await?;
        actor.visible(webhook.tenant.as_str(), "webhook")?;
        Ok(webhook)
    }

    pub async fn list_webhooks(
        &self,
        actor: &Actor,
        tenant: &Tenant,
        page_size: u32,
        after: Option<WebhookId>,
    ) -> Result<Page<Webhook, WebhookId>, AdminError> {
        actor.require_tenant(tenant)?;
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        let webhooks = self
            .store
            .list_webhooks(tenant, after.as_ref(), page_size + 1)
            .await?;
        Ok(Page::of_one_more(webhooks, page_size as usize, |webhook| {
            webhook.id.clone()
        }))
    }

    pub async fn update_webhook(
        &self,
        actor: &Actor,
        id: &WebhookId,
        changes: WebhookChanges,
    ) -> Result<Webhook, AdminError> {
        let before = self.get_webhook(actor, id).await?;
        let mut changed = Vec::new();
        if let Some(url) = &changes.url {
            changed.push(format!(
                "url to {}",
                url.url().host_str().unwrap_or_default()
            ));
        }
        if let Some(types) = &changes.event_types {
            changed.push(format!("{} event types", types.len()));
        }
        if changes.description.is_some() {
            changed.push("description".to_owned());
        }
        match changes.disabled {
            Some(true) => changed.push("disabled".to_owned()),
            Some(false) => changed.push("resumed".to_owned()),
            None => {}
        }
        let audit = event(
            actor,
            "webhook.update",
            &before,
            format!("updated webhook {}: {}", before.id, changed.join(", ")),
        );
        let updated = self
            .store
            .update_webhook(id, &changes, Utc::now(), &audit)
            .await?;
        Ok(updated)
    }

    pub async fn delete_webhook(
        &self,
        actor: &Actor,
        id: &WebhookId,
    ) -> Result<Webhook, AdminError> {
        let before = self.get_webhook(actor, id).await?;
        let audit = event(
            actor,
            "webhook.delete",
            &before,
            format!("deleted {}", describe(&before)),
        );
        let deleted = self.store.delete_webhook(id, &audit).await?;
        tracing::info!(webhook_id = %deleted.id, "webhook deleted");
        Ok(deleted)
    }

    /// A webhook's deliveries, newest first, paged by delivery id.
    pub async fn list_webhook_deliveries(
        &self,
        actor: &Actor,
        id: &WebhookId,
        page_size: u32,
        before: Option<i64>,
    ) -> Result<Page<WebhookDelivery, i64>, AdminError> {
        self.get_webhook(actor, id).await?;
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        let deliveries = self
            .store
            .list_webhook_deliveries(id, before, page_size + 1)
            .await?;
        Ok(Page::of_one_more(
            deliveries,
            page_size as usize,
            |delivery| delivery.id,
        ))
    }
}
