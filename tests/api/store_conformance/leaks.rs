//! Leak reports (issue 17), on both backends: `report_leak` revokes or notifies by the tenant's
//! `leak_action`, once, and a secret that authenticates nothing changes nothing.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tessera::domain::leak::{LeakAction, LeakOutcome, LeakReport, LeakSource};
use tessera::domain::policy::TenantPolicy;
use tessera::domain::token::{TokenPrefix, generate};
use tessera::store::{Rotation, Store};

use super::{all_audit_events, audit, create, new_token, now, owner, tenant};

fn report(at: DateTime<Utc>) -> LeakReport {
    LeakReport {
        source: LeakSource::Report,
        url: Some("https://paste.example/1".to_owned()),
        at,
    }
}

fn leak_audits(events: &[tessera::domain::model::AuditEvent]) -> usize {
    events
        .iter()
        .filter(|event| event.action == "token.leaked")
        .count()
}

pub(super) async fn a_leak_report_revokes_or_notifies_by_policy_once_and_a_dead_secret_changes_nothing(
    store: Arc<dyn Store>,
) {
    let alice = owner(&store, "acme", "alice").await;
    let revoked_by_default = new_token(&alice, now());
    create(&store, &revoked_by_default).await;
    let unknown = generate(&TokenPrefix::default()).hash;
    let at = now();

    let finding = store
        .report_leak(&unknown, &report(at))
        .await
        .expect("reported");
    assert_eq!(
        (finding.outcome, finding.token),
        (LeakOutcome::Unknown, None)
    );

    let finding = store
        .report_leak(&revoked_by_default.secret_hash, &report(at))
        .await
        .expect("reported");
    assert_eq!(finding.outcome, LeakOutcome::Revoked);
    let revoked = finding.token.expect("the token");
    assert_eq!(revoked.revoked_at, Some(at));
    assert_eq!(revoked.version, revoked_by_default.token.version + 1);
    let again = store
        .report_leak(&revoked_by_default.secret_hash, &report(at))
        .await
        .expect("reported");
    assert_eq!(again.outcome, LeakOutcome::Inactive);
    assert_eq!(leak_audits(&all_audit_events(&store).await), 1);

    // Under notify: the token stays, one audit entry per hour of repeats.
    let policy = TenantPolicy {
        leak_action: LeakAction::Notify,
        updated_at: Some(now()),
        ..TenantPolicy::none(tenant("acme"))
    };
    let stored = store
        .set_tenant_policy(&policy, &audit("tenant_policy.set", "acme"))
        .await
        .expect("policy set");
    assert_eq!(stored.leak_action, LeakAction::Notify);
    assert_eq!(
        store
            .get_tenant_policy(&tenant("acme"))
            .await
            .expect("read")
            .leak_action,
        LeakAction::Notify
    );
    let notified = new_token(&alice, now());
    create(&store, &notified).await;
    let mut seen = Vec::new();
    for time in [at, at + Duration::minutes(59), at + Duration::minutes(61)] {
        let finding = store
            .report_leak(&notified.secret_hash, &report(time))
            .await
            .expect("reported");
        assert_eq!(finding.token.expect("token").revoked_at, None);
        seen.push(finding.outcome);
    }
    assert_eq!(
        seen,
        [
            LeakOutcome::Notified,
            LeakOutcome::Repeated,
            LeakOutcome::Notified
        ]
    );
    assert_eq!(leak_audits(&all_audit_events(&store).await), 3);

    // A retired secret: leaked while in its grace (it still works), dead after it.
    let rotated = new_token(&alice, now());
    create(&store, &rotated).await;
    let secret = generate(&TokenPrefix::default());
    let rotation = Rotation {
        id: rotated.token.id.clone(),
        new_secret_hash: secret.hash,
        new_secret_hint: secret.hint,
        rotated_at: at,
        new_expires_at: at + Duration::days(90),
        old_secret_grace_until: at + Duration::minutes(10),
        new_signing_key: None,
        max_live_per_owner: 64,
        forget_retired_before: at - Duration::days(30),
    };
    store
        .rotate_token(&rotation, &audit("token.rotate", "acme"))
        .await
        .expect("rotated");
    let past_grace = store
        .report_leak(&rotated.secret_hash, &report(at + Duration::minutes(11)))
        .await
        .expect("reported");
    assert_eq!(
        (past_grace.outcome, past_grace.token),
        (LeakOutcome::Inactive, None)
    );
    let in_grace = store
        .report_leak(&rotated.secret_hash, &report(at + Duration::minutes(5)))
        .await
        .expect("reported");
    assert_eq!(in_grace.outcome, LeakOutcome::Notified);
    assert_eq!(
        in_grace.token.map(|token| token.id),
        Some(rotated.token.id.clone())
    );
}
