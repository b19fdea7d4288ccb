//! Webhook rows → domain types (issue 17), beside `codec.rs` for the other tables.

use super::StoreError;
use super::codec::{corrupt, instant, optional_instant, parse_field};
use crate::domain::event::{Event, EventId, EventType};
use crate::domain::fields::{Description, Tenant};
use crate::domain::signature::SealedSigningKey;
use crate::domain::webhook::{
    DeliveryState, DueDelivery, Webhook, WebhookDelivery, WebhookId, WebhookUrl, decode_event_types,
};

/// The columns of `webhooks` that [`WebhookRow`] decodes, each prefixed with `$prefix`.
#[rustfmt::skip]
macro_rules! webhook_columns {
    ($prefix:literal) => {
        concat!(
            $prefix, "id, ",
            $prefix, "tenant, ",
            $prefix, "url, ",
            $prefix, "event_types, ",
            $prefix, "description, ",
            $prefix, "secret_hint, ",
            $prefix, "disabled, ",
            $prefix, "failing_since, ",
            $prefix, "created_at, ",
            $prefix, "updated_at"
        )
    };
}
pub(super) use webhook_columns;

/// The columns of `webhook_deliveries` joined with `events` (`d` and `e`) that
/// [`DeliveryRow`] decodes.
macro_rules! delivery_columns {
    () => {
        "d.id, d.webhook_id, e.id AS event_id, e.type AS event_type, d.state, d.attempts, \
         d.next_attempt_at, d.last_attempt_at, d.last_status, d.last_error, d.created_at, \
         d.delivered_at"
    };
}
pub(super) use delivery_columns;

#[derive(sqlx::FromRow)]
pub(super) struct WebhookRow {
    id: String,
    tenant: String,
    url: String,
    event_types: String,
    description: String,
    secret_hint: String,
    disabled: bool,
    failing_since: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl WebhookRow {
    pub(super) fn into_webhook(self) -> Result<Webhook, StoreError> {
        Ok(Webhook {
            id: WebhookId::from_stored(self.id),
            tenant: parse_field(&self.tenant, Tenant::parse, "webhooks.tenant")?,
            url: WebhookUrl::from_stored(&self.url).ok_or_else(|| corrupt("webhooks.url"))?,
            event_types: decode_event_types(&self.event_types)
                .ok_or_else(|| corrupt("webhooks.event_types"))?,
            description: parse_field(
                &self.description,
                Description::parse,
                "webhooks.description",
            )?,
            disabled: self.disabled,
            failing_since: optional_instant(self.failing_since)?,
            secret_hint: self.secret_hint,
            created_at: instant(self.created_at)?,
            updated_at: instant(self.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct DeliveryRow {
    id: i64,
    webhook_id: String,
    event_id: String,
    event_type: String,
    state: String,
    attempts: i32,
    next_attempt_at: i64,
    last_attempt_at: Option<i64>,
    last_status: Option<i32>,
    last_error: String,
    created_at: i64,
    delivered_at: Option<i64>,
}

impl DeliveryRow {
    pub(super) fn into_delivery(self) -> Result<WebhookDelivery, StoreError> {
        Ok(WebhookDelivery {
            id: self.id,
            webhook_id: WebhookId::from_stored(self.webhook_id),
            event_id: self.event_id,
            event_type: self.event_type,
            state: DeliveryState::parse(&self.state)
                .ok_or_else(|| corrupt("webhook_deliveries.state"))?,
            attempts: u32::try_from(self.attempts)
                .map_err(|_| corrupt("webhook_deliveries.attempts"))?,
            next_attempt_at: instant(self.next_attempt_at)?,
            last_attempt_at: optional_instant(self.last_attempt_at)?,
            last_status: self
                .last_status
                .map(|status| {
                    u16::try_from(status).map_err(|_| corrupt("webhook_deliveries.last_status"))
                })
                .transpose()?,
            last_error: self.last_error,
            created_at: instant(self.created_at)?,
            delivered_at: optional_instant(self.delivered_at)?,
        })
    }
}

/// A claimed delivery with its webhook and event.
#[derive(sqlx::FromRow)]
pub(super) struct DueRow {
    id: i64,
    attempts: i32,
    webhook_id: String,
    tenant: String,
    url: String,
    sealed_secret: Vec<u8>,
    event_seq: i64,
    event_id: String,
    event_type: String,
    event_tenant: String,
    event_time: i64,
    event_data: String,
}

impl DueRow {
    pub(super) fn into_due(self) -> Result<DueDelivery, StoreError> {
        let event = Event {
            seq: self.event_seq,
            id: EventId::from_stored(self.event_id),
            event_type: EventType::parse(&self.event_type).ok_or_else(|| corrupt("events.type"))?,
            tenant: self.event_tenant,
            time: instant(self.event_time)?,
            token_id: None,
            principal_id: None,
            data: serde_json::from_str(&self.event_data).map_err(|_| corrupt("events.data"))?,
        };
        Ok(DueDelivery {
            id: self.id,
            attempts: u32::try_from(self.attempts)
                .map_err(|_| corrupt("webhook_deliveries.attempts"))?,
            webhook_id: WebhookId::from_stored(self.webhook_id),
            tenant: self.tenant,
            url: self.url,
            sealed_secret: SealedSigningKey::from_bytes(self.sealed_secret),
            event,
        })
    }
}
