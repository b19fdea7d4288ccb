//! `tessera policy get|set`, `tessera token list --policy-violations` and `tessera token import
//! FILE.jsonl`, through the real binary.

use tessera::domain::token::SecretHash;

use super::{Tessera, admin, assert_contains, check};
use crate::helpers::{Backend, spawn_app_with};

#[tokio::test]
async fn a_tenant_policy_is_set_shown_and_its_violators_listed_from_the_command_line() {
    let app = super::app_with_alice().await;
    let (id, _) = super::create_token(&app, "wide", "orders:write").await;
    let set = admin(
        &app,
        "policy set --tenant acme --max-lifetime 30d --allow-permission orders:read \
         --max-tokens-per-owner 5 --enforce-on-existing --json",
    )
    .await
    .json(0);
    assert_eq!(set["policy"]["max_lifetime"], "2592000s");
    assert_eq!(set["policy"]["allowed_permissions"][0], "orders:read");
    assert_eq!(set["policy"]["max_tokens_per_owner"], 5);
    assert_eq!(set["policy"]["enforce_on_existing"], true);
    assert_eq!(
        set["policy"]["leak_action"], "LEAK_ACTION_REVOKE",
        "the default"
    );
    let notify = admin(&app, "policy set --tenant acme --leak-action notify --json")
        .await
        .json(0);
    assert_eq!(notify["policy"]["leak_action"], "LEAK_ACTION_NOTIFY");
    assert_eq!(
        notify["policy"]["max_tokens_per_owner"], 0,
        "the rest is off"
    );
    let set = admin(
        &app,
        "policy set --tenant acme --max-lifetime 30d --allow-permission orders:read \
         --max-tokens-per-owner 5 --enforce-on-existing --leak-action revoke --json",
    )
    .await
    .json(0);
    assert_eq!(set["policy"]["leak_action"], "LEAK_ACTION_REVOKE");

    let shown = admin(&app, "policy get --tenant acme").await;
    assert_contains(shown.stdout(0), "max lifetime");
    assert_contains(shown.stdout(0), "orders:read");

    let violators = admin(&app, "token list --tenant acme --policy-violations --json")
        .await
        .json(0);
    let tokens = violators["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 1, "{violators}");
    assert_eq!(tokens[0]["id"], id.as_str());
    assert_eq!(tokens[0]["policy_violations"][0], "max_lifetime");
    assert_eq!(tokens[0]["policy_violations"][1], "allowed_permissions");

    let refused =
        super::create_for_alice(&app, "too long", "--ttl 60d --permission orders:read").await;
    assert_contains(
        refused.stderr(refused.code.expect("exit code")),
        "max_lifetime",
    );
    assert_ne!(refused.code, Some(0));
}

#[tokio::test]
async fn tokens_are_imported_from_a_json_lines_file_and_their_old_secrets_then_work() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.accept_imported_tokens = true;
    })
    .await;
    admin(
        &app,
        "principal upsert alice --tenant acme --permission orders:read",
    )
    .await
    .stdout(0);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("tokens.jsonl");
    let lines: Vec<String> = ["legacy_one", "legacy_two"]
        .iter()
        .map(|secret| {
            serde_json::json!({
                "owner_id": "alice",
                "name": format!("from {secret}"),
                "secret_sha256": SecretHash::of(secret).to_hex(),
                "permissions": ["orders:read"],
                "expires_at": "2030-01-31T00:00:00Z",
            })
            .to_string()
        })
        .collect();
    std::fs::write(&file, lines.join("\n")).expect("file written");

    let outcome = Tessera::against(&app, "token import --tenant acme")
        .flag("--", file.to_str().expect("utf-8 path"))
        .run()
        .await;
    assert_contains(outcome.stdout(0), "imported 2 tokens");
    assert_contains(outcome.stdout(0), "from legacy_two");
    assert_contains(
        check(&app, "legacy_one", "orders:read").await.stdout(0),
        "allowed",
    );

    // A bad line is named before anything is sent.
    std::fs::write(&file, "{\"owner_id\":\"alice\",\"name\":\"x\"}\n").expect("file written");
    let outcome = Tessera::against(&app, "token import --tenant acme")
        .flag("--", file.to_str().expect("utf-8 path"))
        .run()
        .await;
    assert_ne!(outcome.code, Some(0));
    assert_contains(&outcome.stderr, "line 1");

    // The server's refusal names the entry.
    let again = serde_json::json!({
        "owner_id": "alice",
        "name": "again",
        "secret_sha256": SecretHash::of("legacy_one").to_hex(),
    });
    std::fs::write(&file, again.to_string()).expect("file written");
    let outcome = Tessera::against(&app, "token import --tenant acme")
        .flag("--", file.to_str().expect("utf-8 path"))
        .run()
        .await;
    assert_ne!(outcome.code, Some(0));
    assert_contains(&outcome.stderr, "tokens[0].secret_sha256");
}
