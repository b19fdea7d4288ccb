//! Leak reports (issue 17, point 4) through the real server's HTTP listener: GitHub secret
//! scanning reports signed with a P-256 key the test generates, and anyone's `/leaked-tokens`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::Generate as _;
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use serde_json::{Value, json};
use tessera::proto;
use tessera::proto::DenyReason;

use crate::backend_tests;
use crate::helpers::http::{HttpAnswer, post};
use crate::helpers::pausing_store::PausingStore;
use crate::helpers::requests::{all_audit_events, check_request, wait_for_reason};
use crate::helpers::{Backend, TestApp, new_token, spawn_app_pausing, unknown_secret};

const TENANT: &str = "acme";

/// A key GitHub would sign with, and its identifier in the key list.
struct GithubKey {
    id: String,
    signing: SigningKey,
}

impl GithubKey {
    fn generate(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            signing: SigningKey::generate_from_rng(&mut rand::rng()),
        }
    }

    fn sign(&self, body: &[u8]) -> String {
        let signature: Signature = self.signing.sign(body);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }
}

/// Writes GitHub's key-list JSON, replacing the file at once as a deployment would (write, then
/// rename).
fn write_keys(path: &Path, keys: &[&GithubKey]) {
    let listed: Vec<Value> = keys
        .iter()
        .map(|key| {
            let pem = key
                .signing
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("pem");
            json!({"key_identifier": key.id, "key": pem, "is_current": true})
        })
        .collect();
    let staged = path.with_extension("tmp");
    std::fs::write(&staged, json!({ "public_keys": listed }).to_string()).expect("keys written");
    std::fs::rename(&staged, path).expect("keys replaced");
}

struct LeakApp {
    app: TestApp,
    store: Arc<PausingStore>,
    http: SocketAddr,
    key: GithubKey,
    keys_file: PathBuf,
    /// Holds the keys file.
    _dir: tempfile::TempDir,
}

async fn leak_app(backend: Backend) -> LeakApp {
    leak_app_with(backend, |_| {}).await
}

async fn leak_app_with(
    backend: Backend,
    customize: impl FnOnce(&mut tessera::config::Settings),
) -> LeakApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys_file = dir.path().join("github-keys.json");
    let key = GithubKey::generate("k1");
    write_keys(&keys_file, &[&key]);
    let file = keys_file.clone();
    let (app, store) = spawn_app_pausing(backend, move |settings| {
        settings.http_listen = Some("127.0.0.1:0".parse().expect("address"));
        settings.github_scanning_keys_file = Some(file);
        customize(settings);
    })
    .await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    let http = app.http_addr.expect("http listener");
    LeakApp {
        app,
        store,
        http,
        key,
        keys_file,
        _dir: dir,
    }
}

impl LeakApp {
    async fn live_token(&self) -> (proto::Token, String) {
        self.app
            .token(new_token(TENANT, "alice", &["orders:read"]))
            .await
    }

    async fn github(&self, key: &GithubKey, body: &[u8]) -> HttpAnswer {
        let signature = key.sign(body);
        post(
            self.http,
            "/secret-scanning/github",
            &[
                ("content-type", "application/json"),
                ("github-public-key-identifier", &key.id),
                ("github-public-key-signature", &signature),
            ],
            body,
        )
        .await
    }

    async fn allowed(&self, secret: &str) -> bool {
        self.app
            .check(check_request(TENANT, secret, "orders:read"))
            .await
            .allowed
    }

    async fn leak_audits(&self) -> Vec<proto::AuditEvent> {
        all_audit_events(&self.app)
            .await
            .into_iter()
            .filter(|event| event.action == "token.leaked")
            .collect()
    }
}

/// GitHub's report body: one match per token.
fn github_body(tokens: &[&str]) -> Vec<u8> {
    let matches: Vec<Value> = tokens
        .iter()
        .map(|token| {
            json!({
                "token": token,
                "type": "tessera_api_token",
                "url": "https://github.com/octo/repo/blob/abc/config.yml",
                "source": "content",
            })
        })
        .collect();
    Value::Array(matches).to_string().into_bytes()
}

fn labels(answer: &HttpAnswer) -> Vec<String> {
    assert_eq!(answer.status, 200, "{answer:?}");
    answer
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .map(|entry| entry["label"].as_str().expect("label").to_owned())
        .collect()
}

/// The events of `type` about `token_id`, read from the outbox table directly (WatchEvents is
/// built elsewhere).
async fn events(app: &TestApp, event_type: &str, token_id: &str) -> Vec<Value> {
    let url = app.database.url();
    let query = "SELECT data FROM events WHERE type = $1 AND token_id = $2 ORDER BY seq";
    let rows: Vec<String> = if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(url).await.expect("sqlite opens");
        sqlx::query_scalar(query)
            .bind(event_type)
            .bind(token_id)
            .fetch_all(&pool)
            .await
            .expect("events read")
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("postgres connects");
        sqlx::query_scalar(query)
            .bind(event_type)
            .bind(token_id)
            .fetch_all(&pool)
            .await
            .expect("events read")
    };
    rows.iter()
        .map(|data| serde_json::from_str(data).expect("event data is json"))
        .collect()
}

async fn set_leak_action(app: &TestApp, action: proto::LeakAction) {
    app.admin_client()
        .await
        .set_tenant_policy(app.admin(proto::SetTenantPolicyRequest {
            policy: Some(proto::TenantPolicy {
                tenant: TENANT.to_owned(),
                leak_action: action.into(),
                ..Default::default()
            }),
        }))
        .await
        .expect("policy set");
}

backend_tests!(
    a_live_token_reported_by_github_is_revoked_audited_and_answered_true_positive_and_only_once,
    under_a_notify_policy_a_reported_token_keeps_working_with_one_event_per_hour,
    a_bad_signature_an_unknown_key_or_no_signature_changes_nothing,
    a_replaced_keys_file_is_read_again_and_its_keys_alone_are_accepted,
    malformed_and_foreign_tokens_cost_no_store_lookup,
    a_public_report_revokes_a_live_token_and_answers_as_for_junk,
    a_public_report_of_more_than_100_tokens_is_refused_naming_the_field,
    a_flood_of_public_reports_from_one_client_is_rate_limited,
);

async fn a_live_token_reported_by_github_is_revoked_audited_and_answered_true_positive_and_only_once(
    backend: Backend,
) {
    let leak = leak_app(backend).await;
    let (token, secret) = leak.live_token().await;
    assert!(leak.allowed(&secret).await, "cached as live");
    let unknown = unknown_secret();
    let answer = leak
        .github(
            &leak.key,
            &github_body(&[&secret, &unknown, "ghp_not_ours_at_all"]),
        )
        .await;
    assert_eq!(
        labels(&answer),
        ["true_positive", "false_positive", "false_positive"]
    );
    assert_eq!(answer.json()[0]["token_raw"], secret.as_str());
    assert_eq!(answer.json()[0]["token_type"], "tessera_api_token");
    // Answered after the revocation was announced: this replica's cache already dropped it.
    let check = check_request(TENANT, &secret, "orders:read");
    assert_eq!(
        leak.app.check(check).await.reason(),
        DenyReason::TokenRevoked
    );

    let audits = leak.leak_audits().await;
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert_eq!(audits[0].actor, "secret-scanning:github");
    assert_eq!(audits[0].token_id, token.id);
    assert!(audits[0].summary.contains("revoked"), "{audits:?}");
    let leaked = events(&leak.app, "token.leaked", &token.id).await;
    assert_eq!(leaked.len(), 1);
    assert_eq!(
        leaked[0]["leak"],
        json!({
            "source": "github",
            "url": "https://github.com/octo/repo/blob/abc/config.yml",
            "action": "revoked",
        })
    );
    assert!(
        !leaked[0].to_string().contains(&secret),
        "no secret in events"
    );
    assert_eq!(events(&leak.app, "token.revoked", &token.id).await.len(), 1);

    // GitHub reports it again: it no longer works, nothing more is written.
    let again = leak.github(&leak.key, &github_body(&[&secret])).await;
    assert_eq!(labels(&again), ["false_positive"]);
    assert_eq!(leak.leak_audits().await.len(), 1);
    assert_eq!(events(&leak.app, "token.leaked", &token.id).await.len(), 1);
}

async fn under_a_notify_policy_a_reported_token_keeps_working_with_one_event_per_hour(
    backend: Backend,
) {
    let leak = leak_app(backend).await;
    set_leak_action(&leak.app, proto::LeakAction::Notify).await;
    let policy = leak
        .app
        .admin_client()
        .await
        .get_tenant_policy(leak.app.admin(proto::GetTenantPolicyRequest {
            tenant: TENANT.to_owned(),
        }))
        .await
        .expect("policy read")
        .into_inner()
        .policy
        .expect("policy");
    assert_eq!(policy.leak_action(), proto::LeakAction::Notify);
    let (token, secret) = leak.live_token().await;
    for _ in 0..3 {
        let answer = leak.github(&leak.key, &github_body(&[&secret])).await;
        assert_eq!(
            labels(&answer),
            ["true_positive"],
            "live, so a true positive"
        );
    }
    assert!(leak.allowed(&secret).await, "still working");
    let audits = leak.leak_audits().await;
    assert_eq!(audits.len(), 1, "one per hour: {audits:?}");
    assert!(audits[0].summary.contains("left active"), "{audits:?}");
    let leaked = events(&leak.app, "token.leaked", &token.id).await;
    assert_eq!(leaked.len(), 1);
    assert_eq!(leaked[0]["leak"]["action"], "notified");
    assert!(
        events(&leak.app, "token.revoked", &token.id)
            .await
            .is_empty()
    );
}

async fn a_bad_signature_an_unknown_key_or_no_signature_changes_nothing(backend: Backend) {
    let leak = leak_app(backend).await;
    let (_, secret) = leak.live_token().await;
    let body = github_body(&[&secret]);
    let tampered = github_body(&[&secret, &unknown_secret()]);
    let signature = leak.key.sign(&body);
    let refused = |key_id: String, signature: String, body: Vec<u8>| {
        let http = leak.http;
        async move {
            post(
                http,
                "/secret-scanning/github",
                &[
                    ("github-public-key-identifier", &key_id),
                    ("github-public-key-signature", &signature),
                ],
                &body,
            )
            .await
        }
    };
    let cases = [
        (
            "tampered body",
            refused("k1".to_owned(), signature.clone(), tampered).await,
            403,
        ),
        (
            "unknown key id",
            refused("k9".to_owned(), signature.clone(), body.clone()).await,
            401,
        ),
        (
            "another key under k1",
            leak.github(&GithubKey::generate("k1"), &body).await,
            403,
        ),
        (
            "not base64 DER",
            refused(
                "k1".to_owned(),
                "bm90IGEgc2lnbmF0dXJl".to_owned(),
                body.clone(),
            )
            .await,
            403,
        ),
        (
            "no headers",
            post(leak.http, "/secret-scanning/github", &[], &body).await,
            401,
        ),
    ];
    for (case, answer, status) in cases {
        assert_eq!(answer.status, status, "{case}: {answer:?}");
    }
    assert_eq!(leak.store.leak_lookups(), 0, "nothing looked up");
    assert!(leak.allowed(&secret).await);
    assert!(leak.leak_audits().await.is_empty());
}

async fn a_replaced_keys_file_is_read_again_and_its_keys_alone_are_accepted(backend: Backend) {
    let leak = leak_app(backend).await;
    let junk = github_body(&["junk"]);
    assert_eq!(
        labels(&leak.github(&leak.key, &junk).await),
        ["false_positive"]
    );
    let rotated = GithubKey::generate("k2");
    write_keys(&leak.keys_file, &[&rotated]);
    assert_eq!(
        labels(&leak.github(&rotated, &junk).await),
        ["false_positive"]
    );
    assert_eq!(
        leak.github(&leak.key, &junk).await.status,
        401,
        "k1 is no longer listed"
    );
    // A broken file refuses every report (rather than keep keys a rotation removed) until fixed.
    std::fs::write(&leak.keys_file, "{not json").expect("broken");
    assert_eq!(leak.github(&rotated, &junk).await.status, 503);
    write_keys(&leak.keys_file, &[&leak.key, &rotated]);
    assert_eq!(
        labels(&leak.github(&leak.key, &junk).await),
        ["false_positive"]
    );
}

async fn malformed_and_foreign_tokens_cost_no_store_lookup(backend: Backend) {
    let leak = leak_app(backend).await;
    let (_, secret) = leak.live_token().await;
    let mut bad_checksum = secret.clone();
    let last = bad_checksum.pop().expect("a character");
    bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
    let mut entries = vec![
        "ghp_0123456789abcdefghijklmnopqrstuvwxyz".to_owned(),
        String::new(),
        "tsk_short".to_owned(),
        format!("{}!", &secret[..secret.len() - 1]),
        bad_checksum,
        format!("tska{}", &secret[3..]),
        "x".repeat(4000),
    ];
    entries.extend((0..50).map(|index| format!("tsk_{index}")));
    let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
    let answer = leak.github(&leak.key, &github_body(&refs)).await;
    assert!(
        labels(&answer)
            .iter()
            .all(|label| label == "false_positive"),
        "{answer:?}"
    );
    assert_eq!(leak.store.leak_lookups(), 0, "no lookup for any of them");
    assert!(leak.allowed(&secret).await);

    // A token of Tessera's format is looked up, once, even when no token has it.
    let unknown = unknown_secret();
    let answer = leak.github(&leak.key, &github_body(&[&unknown])).await;
    assert_eq!(labels(&answer), ["false_positive"]);
    assert_eq!(leak.store.leak_lookups(), 1);
}

async fn a_public_report_revokes_a_live_token_and_answers_as_for_junk(backend: Backend) {
    let leak = leak_app(backend).await;
    let (token, secret) = leak.live_token().await;
    let report = |tokens: Vec<String>| {
        let body = json!({ "tokens": tokens, "url": "https://paste.example/abc" }).to_string();
        let http = leak.http;
        async move {
            post(
                http,
                "/leaked-tokens",
                &[("content-type", "application/json")],
                body.as_bytes(),
            )
            .await
        }
    };
    let junk = report(vec!["junk".to_owned()]).await;
    let live = report(vec![secret.clone(), unknown_secret(), "junk".to_owned()]).await;
    assert_eq!(live.status, 202, "{live:?}");
    assert_eq!(
        (live.status, live.body.as_str()),
        (junk.status, junk.body.as_str())
    );
    wait_for_reason(
        &leak.app,
        check_request(TENANT, &secret, "orders:read"),
        DenyReason::TokenRevoked,
    )
    .await;
    let started = Instant::now();
    let audits = loop {
        let audits = leak.leak_audits().await;
        if !audits.is_empty() || started.elapsed() > Duration::from_secs(10) {
            break audits;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].actor, "leak-report");
    assert!(audits[0].summary.contains("https://paste.example/abc"));
    let leaked = events(&leak.app, "token.leaked", &token.id).await;
    assert_eq!(leaked[0]["leak"]["source"], "report");
}

async fn a_public_report_of_more_than_100_tokens_is_refused_naming_the_field(backend: Backend) {
    let leak = leak_app(backend).await;
    let (_, secret) = leak.live_token().await;
    let tokens = vec![secret.clone(); 101];
    let body = json!({ "tokens": tokens }).to_string();
    let answer = post(leak.http, "/leaked-tokens", &[], body.as_bytes()).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.json()["field"], "tokens");
    let shapeless = post(leak.http, "/leaked-tokens", &[], b"[\"a\"]").await;
    assert_eq!(shapeless.status, 400, "{shapeless:?}");
    assert_eq!(leak.store.leak_lookups(), 0);
    assert!(leak.allowed(&secret).await);
}

async fn a_flood_of_public_reports_from_one_client_is_rate_limited(backend: Backend) {
    let leak = leak_app_with(backend, |settings| settings.leak_reports_per_minute = 3).await;
    let body = json!({ "tokens": ["junk"] }).to_string();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let answer = post(leak.http, "/leaked-tokens", &[], body.as_bytes()).await;
        if answer.status == 429 {
            let retry_after: u64 = answer
                .header("retry-after")
                .expect("retry-after")
                .parse()
                .expect("seconds");
            assert!((1..=60).contains(&retry_after), "{retry_after}");
        }
        statuses.push(answer.status);
    }
    assert_eq!(statuses, [202, 202, 202, 429, 429]);
}

#[tokio::test]
async fn without_a_keys_file_the_github_route_is_absent_and_a_bad_one_refuses_the_start() {
    let (app, _) = spawn_app_pausing(Backend::Sqlite, |settings| {
        settings.http_listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let http = app.http_addr.expect("http listener");
    let answer = post(http, "/secret-scanning/github", &[], b"[]").await;
    assert_eq!(answer.status, 404);
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = dir.path().join("keys.json");
    std::fs::write(
        &broken,
        r#"{"public_keys": [{"key_identifier": "a", "key": "x"}]}"#,
    )
    .expect("written");
    let settings = tessera::config::Settings {
        github_scanning_keys_file: Some(broken),
        ..app.settings.clone()
    };
    let refusal = tessera::config::Config::parse(settings)
        .map(drop)
        .expect_err("refused");
    assert!(
        refusal
            .to_string()
            .contains("TESSERA_GITHUB_SCANNING_KEYS_FILE"),
        "{refusal}"
    );
}

#[tokio::test]
async fn a_token_revoked_by_a_leak_report_through_one_replica_is_refused_by_the_other() {
    let leak = leak_app(Backend::Postgres).await;
    let replica = leak.app.spawn_replica().await;
    let (_, secret) = leak.live_token().await;
    let check = check_request(TENANT, &secret, "orders:read");
    assert!(replica.check(check.clone()).await.allowed, "cached on b");
    let lookups = replica.store_lookups();
    assert!(replica.check(check.clone()).await.allowed);
    assert_eq!(replica.store_lookups(), lookups, "b decides from its cache");
    let answer = leak.github(&leak.key, &github_body(&[&secret])).await;
    assert_eq!(labels(&answer), ["true_positive"]);
    wait_for_reason(&replica, check, DenyReason::TokenRevoked).await;
}
