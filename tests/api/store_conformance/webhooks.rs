//! Webhooks and their deliveries (issue 17), on both backends: a delivery is queued with its
//! event, claimed by one claimer at a time under a lease, and its attempts recorded, with the
//! webhook marked failing once per episode.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Duration;
use tessera::domain::fields::Description;
use tessera::domain::signature::SealedSigningKey;
use tessera::domain::webhook::{
    AddressRule, Attempt, AttemptResult, DeliveryState, NewWebhook, Webhook, WebhookChanges,
    WebhookId, WebhookUrl,
};
use tessera::store::{Store, StoreError};

use super::{audit, create_for, now, owner, tenant};

fn new_webhook(tenant_name: &str) -> NewWebhook {
    let at = now();
    NewWebhook {
        webhook: Webhook {
            id: WebhookId::generate(),
            tenant: tenant(tenant_name),
            url: WebhookUrl::parse(
                "http://127.0.0.1:9/hook",
                AddressRule {
                    allow_private: true,
                },
            )
            .expect("url"),
            event_types: Vec::new(),
            description: Description::parse("receiver").expect("description"),
            disabled: false,
            failing_since: None,
            secret_hint: "abcd".to_owned(),
            created_at: at,
            updated_at: at,
        },
        sealed_secret: SealedSigningKey::from_bytes(vec![1; 57]),
    }
}

async fn created_webhook(store: &Arc<dyn Store>, tenant_name: &str) -> Webhook {
    store
        .create_webhook(
            &new_webhook(tenant_name),
            16,
            &audit("webhook.create", tenant_name),
        )
        .await
        .expect("webhook created")
}

fn attempt(delivery_id: i64, webhook: &WebhookId, result: AttemptResult) -> Attempt {
    Attempt {
        delivery_id,
        webhook_id: webhook.clone(),
        attempted_at: now(),
        status: Some(500),
        error: "answered 500".to_owned(),
        result,
    }
}

pub(super) async fn a_claimed_delivery_is_not_claimed_again_until_its_lease_ends(
    store: Arc<dyn Store>,
) {
    // The owner first: its principal.updated event precedes the webhook, which then gets only
    // the token's event.
    let alice = owner(&store, "acme", "alice").await;
    let webhook = created_webhook(&store, "acme").await;
    assert_eq!(
        store.get_webhook(&webhook.id).await.expect("read back"),
        webhook
    );
    let token = create_for(&store, &alice).await;

    let at = now();
    let claimed = store
        .claim_webhook_deliveries(at, at + Duration::seconds(60), 10)
        .await
        .expect("claimed");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].webhook_id, webhook.id);
    assert_eq!(claimed[0].attempts, 0);
    assert_eq!(claimed[0].event.event_type.as_str(), "token.created");
    assert_eq!(claimed[0].event.data["token"]["id"], token.id.as_str());
    assert_eq!(claimed[0].sealed_secret.as_bytes(), [1; 57]);

    let again = store
        .claim_webhook_deliveries(at, at + Duration::seconds(60), 10)
        .await
        .expect("claimed");
    assert!(again.is_empty(), "{again:?}");
    let after_the_lease = at + Duration::seconds(61);
    let reclaimed = store
        .claim_webhook_deliveries(after_the_lease, after_the_lease + Duration::seconds(60), 10)
        .await
        .expect("claimed");
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].id, claimed[0].id);
}

pub(super) async fn concurrent_claims_never_share_a_delivery(store: Arc<dyn Store>) {
    let alice = owner(&store, "acme", "alice").await;
    created_webhook(&store, "acme").await;
    for _ in 0..20 {
        create_for(&store, &alice).await;
    }
    let at = now();
    let claims = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .claim_webhook_deliveries(at, at + Duration::seconds(60), 8)
                .await
                .expect("claimed")
        })
    });
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for claim in claims {
        for delivery in claim.await.expect("claim task") {
            seen.insert(delivery.id);
            total += 1;
        }
    }
    assert_eq!(total, 20);
    assert_eq!(seen.len(), 20);
}

pub(super) async fn a_last_failed_attempt_marks_the_webhook_failing_once_and_a_delivery_clears_it(
    store: Arc<dyn Store>,
) {
    let alice = owner(&store, "acme", "alice").await;
    let webhook = created_webhook(&store, "acme").await;
    for _ in 0..3 {
        create_for(&store, &alice).await;
    }
    let at = now();
    let claimed = store
        .claim_webhook_deliveries(at, at + Duration::seconds(60), 10)
        .await
        .expect("claimed");
    assert_eq!(claimed.len(), 3);

    let retry_at = at + Duration::seconds(1);
    let retried = attempt(
        claimed[0].id,
        &webhook.id,
        AttemptResult::Retry { at: retry_at },
    );
    assert!(
        !store
            .record_webhook_attempt(&retried)
            .await
            .expect("recorded")
    );
    let first_failure = attempt(claimed[1].id, &webhook.id, AttemptResult::Failed);
    assert!(
        store
            .record_webhook_attempt(&first_failure)
            .await
            .expect("recorded")
    );
    let second_failure = attempt(claimed[2].id, &webhook.id, AttemptResult::Failed);
    assert!(
        !store
            .record_webhook_attempt(&second_failure)
            .await
            .expect("recorded")
    );
    // Recorded once: a second record of a finished delivery changes nothing.
    assert!(
        !store
            .record_webhook_attempt(&first_failure)
            .await
            .expect("recorded")
    );
    let failing = store.get_webhook(&webhook.id).await.expect("read");
    assert!(failing.failing_since.is_some());

    let deliveries = store
        .list_webhook_deliveries(&webhook.id, None, 10)
        .await
        .expect("listed");
    let states: Vec<(i64, DeliveryState, u32)> = deliveries
        .iter()
        .map(|delivery| (delivery.id, delivery.state, delivery.attempts))
        .collect();
    assert_eq!(
        states,
        [
            (claimed[2].id, DeliveryState::Failed, 1),
            (claimed[1].id, DeliveryState::Failed, 1),
            (claimed[0].id, DeliveryState::Pending, 1),
        ],
        "newest first"
    );
    assert_eq!(deliveries[2].next_attempt_at, retry_at);
    assert_eq!(deliveries[2].last_status, Some(500));
    let page = store
        .list_webhook_deliveries(&webhook.id, Some(claimed[1].id), 10)
        .await
        .expect("listed");
    assert_eq!(page.len(), 1);

    let later = retry_at + Duration::seconds(1);
    let due = store
        .claim_webhook_deliveries(later, later + Duration::seconds(60), 10)
        .await
        .expect("claimed");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].attempts, 1);
    let delivered = Attempt {
        status: Some(200),
        error: String::new(),
        ..attempt(due[0].id, &webhook.id, AttemptResult::Delivered)
    };
    store
        .record_webhook_attempt(&delivered)
        .await
        .expect("recorded");
    let working = store.get_webhook(&webhook.id).await.expect("read");
    assert_eq!(working.failing_since, None);
}

pub(super) async fn a_disabled_webhook_is_not_claimed_and_a_deleted_one_takes_its_deliveries(
    store: Arc<dyn Store>,
) {
    let alice = owner(&store, "acme", "alice").await;
    let webhook = created_webhook(&store, "acme").await;
    create_for(&store, &alice).await;
    let disable = WebhookChanges {
        disabled: Some(true),
        ..WebhookChanges::default()
    };
    let disabled = store
        .update_webhook(
            &webhook.id,
            &disable,
            now(),
            &audit("webhook.update", "acme"),
        )
        .await
        .expect("disabled");
    assert!(disabled.disabled);
    let at = now();
    let claimed = store
        .claim_webhook_deliveries(at, at + Duration::seconds(60), 10)
        .await
        .expect("claimed");
    assert!(claimed.is_empty());
    let deliveries = store
        .list_webhook_deliveries(&webhook.id, None, 10)
        .await
        .expect("listed");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].state, DeliveryState::Failed);

    let listed = store
        .list_webhooks(&tenant("acme"), None, 10)
        .await
        .expect("listed");
    assert_eq!(listed.len(), 1);
    store
        .delete_webhook(&webhook.id, &audit("webhook.delete", "acme"))
        .await
        .expect("deleted");
    assert!(
        store
            .list_webhook_deliveries(&webhook.id, None, 10)
            .await
            .expect("listed")
            .is_empty()
    );
    assert!(matches!(
        store.get_webhook(&webhook.id).await,
        Err(StoreError::NotFound("webhook"))
    ));
}

pub(super) async fn a_tenant_cannot_have_more_webhooks_than_its_limit(store: Arc<dyn Store>) {
    for _ in 0..2 {
        store
            .create_webhook(&new_webhook("acme"), 2, &audit("webhook.create", "acme"))
            .await
            .expect("created");
    }
    let beyond = store
        .create_webhook(&new_webhook("acme"), 2, &audit("webhook.create", "acme"))
        .await;
    assert!(
        matches!(beyond, Err(StoreError::WebhookLimit { limit: 2 })),
        "{beyond:?}"
    );
    store
        .create_webhook(
            &new_webhook("globex"),
            2,
            &audit("webhook.create", "globex"),
        )
        .await
        .expect("another tenant's own limit");
}
