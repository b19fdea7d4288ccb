//! What a new user tripped over (issue 13): masked principal updates, principal and role
//! commands, idempotent revocation, the effective rate limit in tables, exit codes and help
//! texts; store-backed ones on both backends.

use serde_json::json;

use super::{Tessera, admin, assert_contains, assert_row, assert_starts_with};
use crate::helpers::process::serve_output;
use crate::helpers::{Backend, TestApp, spawn_app_on, spawn_app_with};

/// One `#[tokio::test]` per backend for each listed body `async fn(TestApp)`.
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Postgres).await;
                }
            )+
        }
    };
}

on_both_backends!(
    disabling_a_principal_with_update_keeps_its_permissions,
    principal_list_shows_a_tenants_principals_page_by_page,
    a_role_is_shown_and_deleted_but_not_while_a_token_names_it,
    revoking_a_revoked_token_succeeds_and_changes_nothing,
    token_tables_show_the_effective_rate_limit_not_zero,
    calls_naming_no_tenant_go_to_the_configured_default_tenant,
);

async fn calls_naming_no_tenant_go_to_the_configured_default_tenant(backend: Backend) {
    let app = spawn_app_with(backend, |settings| {
        settings.default_tenant = "shop".to_owned();
    })
    .await;
    let principal = admin(
        &app,
        "principal upsert alice --permission orders:read --json",
    )
    .await
    .json(0);
    assert_eq!(principal["principal"]["tenant"], "shop");
    let created = Tessera::against(
        &app,
        "token create --owner alice --permission orders:read --json",
    )
    .flag("--name", "no tenant named")
    .run()
    .await
    .json(0);
    assert_eq!(created["token"]["tenant"], "shop");
    let secret = created["secret"].as_str().expect("secret");
    let allowed = Tessera::new("check --permission orders:read")
        .flag("--server", &app.grpc_url)
        .flag("--", secret)
        .run()
        .await;
    assert_starts_with(allowed.stdout(0), "allowed");
    // The built-in `default` is just another tenant now.
    let elsewhere = Tessera::new("check --tenant default --permission orders:read")
        .flag("--server", &app.grpc_url)
        .flag("--", secret)
        .run()
        .await;
    assert_starts_with(elsewhere.stdout(1), "denied: tenant_mismatch");
    let listed = admin(&app, "token list --json").await.json(0);
    assert_eq!(listed["tokens"][0]["tenant"], "shop");
}

#[tokio::test]
async fn a_default_tenant_that_is_no_tenant_name_stops_the_start_naming_the_setting() {
    for bad in ["*", "two words", ""] {
        let (code, stderr) = serve_output(&[("TESSERA_DEFAULT_TENANT", bad)]).await;
        assert_eq!(code, Some(1), "{bad:?}: {stderr}");
        assert!(
            stderr.contains("TESSERA_DEFAULT_TENANT"),
            "{bad:?}: {stderr}"
        );
    }
}

/// Creates principal `alice` in `acme` and a token of hers with `name`; the token as JSON.
async fn alice_with_token(app: &TestApp, name: &str) -> serde_json::Value {
    admin(
        app,
        "principal upsert alice --tenant acme --permission orders:read",
    )
    .await
    .stdout(0);
    Tessera::against(app, "token create --owner alice --tenant acme --json")
        .flag("--name", name)
        .run()
        .await
        .json(0)
}

async fn disabling_a_principal_with_update_keeps_its_permissions(backend: Backend) {
    let app = spawn_app_on(backend).await;
    admin(
        &app,
        "principal upsert dave --tenant acme --permission orders:read,orders:write --rate-limit 30",
    )
    .await
    .stdout(0);
    let disabled = admin(
        &app,
        "principal update dave --tenant acme --disabled --json",
    )
    .await
    .json(0);
    let principal = &disabled["principal"];
    assert_eq!(principal["disabled"], true);
    assert_eq!(
        principal["permissions"],
        json!(["orders:read", "orders:write"])
    );
    assert_eq!(principal["rate_limit_per_minute"], 30);

    let enabled = admin(
        &app,
        "principal update dave --tenant acme --enabled --no-rate-limit --json",
    )
    .await
    .json(0);
    assert_eq!(enabled["principal"]["disabled"], false);
    assert_eq!(enabled["principal"]["rate_limit_per_minute"], json!(null));
    assert_eq!(
        enabled["principal"]["permissions"],
        json!(["orders:read", "orders:write"])
    );
    let unknown = admin(&app, "principal update nobody --tenant acme --disabled").await;
    assert_starts_with(unknown.stderr(6), "error: not found");
    let nothing = admin(&app, "principal update dave --tenant acme").await;
    assert_contains(nothing.stderr(2), "nothing to update");
}

async fn principal_list_shows_a_tenants_principals_page_by_page(backend: Backend) {
    let app = spawn_app_on(backend).await;
    for id in ["carol", "alice", "bob"] {
        admin(
            &app,
            &format!("principal upsert {id} --tenant acme --permission a:b"),
        )
        .await
        .stdout(0);
    }
    admin(&app, "principal upsert zed --tenant globex")
        .await
        .stdout(0);
    let first = admin(&app, "principal list --tenant acme --page-size 2 --json")
        .await
        .json(0);
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["principals"]
            .as_array()
            .expect("principals")
            .iter()
            .map(|principal| principal["id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(ids(&first), ["alice", "bob"]);
    let token = first["next_page_token"].as_str().expect("a next page");
    assert!(!token.is_empty());
    let rest = admin(
        &app,
        &format!("principal list --tenant acme --page-size 2 --page-token {token} --json"),
    )
    .await
    .json(0);
    assert_eq!(ids(&rest), ["carol"]);
    assert_eq!(rest["next_page_token"], "");
    let table = admin(&app, "principal list --tenant acme --all").await;
    assert_row(table.stdout(0), &["carol", "a:b"]);
    assert!(!table.stdout.contains("zed"), "{}", table.stdout);
}

async fn a_role_is_shown_and_deleted_but_not_while_a_token_names_it(backend: Backend) {
    let app = spawn_app_on(backend).await;
    admin(
        &app,
        "principal upsert alice --tenant acme --permission orders:read",
    )
    .await
    .stdout(0);
    admin(
        &app,
        "role upsert reporting --tenant acme --permission orders:read",
    )
    .await
    .stdout(0);
    let shown = admin(&app, "role get reporting --tenant acme --json")
        .await
        .json(0);
    assert_eq!(shown["role"]["permissions"], json!(["orders:read"]));
    let created = Tessera::against(
        &app,
        "token create --owner alice --tenant acme --role reporting --json",
    )
    .flag("--name", "reports")
    .run()
    .await
    .json(0);
    let id = created["token"]["id"].as_str().expect("id").to_owned();

    let refused = admin(&app, "role delete reporting --tenant acme").await;
    let stderr = refused.stderr(7);
    assert_starts_with(
        stderr,
        "error: failed precondition: role reporting is named by 1 tokens",
    );
    admin(&app, "role get reporting --tenant acme")
        .await
        .stdout(0);

    admin(&app, &format!("token update {id} --clear-roles"))
        .await
        .stdout(0);
    let deleted = admin(&app, "role delete reporting --tenant acme").await;
    assert_starts_with(deleted.stdout(0), "deleted role reporting of tenant acme");
    let gone = admin(&app, "role get reporting --tenant acme").await;
    assert_starts_with(gone.stderr(6), "error: not found");
    let audit = admin(&app, "audit --tenant acme --all").await;
    assert_row(audit.stdout(0), &["role.delete", "deleted role reporting"]);
}

async fn revoking_a_revoked_token_succeeds_and_changes_nothing(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let created = alice_with_token(&app, "twice").await;
    let id = created["token"]["id"].as_str().expect("id").to_owned();
    let first = admin(&app, &format!("token revoke {id} --json"))
        .await
        .json(0);
    let second = admin(&app, &format!("token revoke {id} --json"))
        .await
        .json(0);
    assert_eq!(second["token"]["state"], "TOKEN_STATE_REVOKED");
    assert_eq!(second["token"]["revoked_at"], first["token"]["revoked_at"]);
    assert_eq!(
        second["token"]["etag"], first["token"]["etag"],
        "nothing was written"
    );
    let audit = admin(&app, "audit --tenant acme --all --json")
        .await
        .json(0);
    let revocations = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| event["action"] == "token.revoke")
        .count();
    assert_eq!(revocations, 1, "{audit:#}");
}

async fn token_tables_show_the_effective_rate_limit_not_zero(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let created = alice_with_token(&app, "defaulted").await;
    assert_eq!(created["token"]["rate_limit_per_minute"], 0);
    assert_eq!(created["token"]["effective_rate_limit_per_minute"], 60);
    let id = created["token"]["id"].as_str().expect("id").to_owned();

    let shown = admin(&app, &format!("token get {id}")).await;
    assert_row(
        shown.stdout(0),
        &["rate limit per minute", "60 (server default)"],
    );
    let listed = admin(&app, "token list --tenant acme").await;
    assert_row(listed.stdout(0), &["defaulted", "60 (server default)"]);

    admin(&app, &format!("token update {id} --rate-limit 5"))
        .await
        .stdout(0);
    let own = admin(&app, &format!("token get {id}")).await;
    let stdout = own.stdout(0);
    assert_row(stdout, &["rate limit per minute", "5"]);
    assert!(!stdout.contains("server default"), "{stdout}");
}

#[tokio::test]
async fn check_exits_1_only_for_denied_and_its_errors_have_codes_of_their_own() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let denied = Tessera::new("check tsk_not_a_token")
        .flag("--server", &app.grpc_url)
        .run()
        .await;
    assert_starts_with(denied.stdout(1), "denied: token_malformed");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let unreachable = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let down = Tessera::new("check tsk_any")
        .flag("--server", &unreachable)
        .run()
        .await;
    assert_contains(down.stderr(4), "cannot reach the Tessera server");
    let usage = Tessera::new("check").run().await;
    assert_eq!(usage.code, Some(2), "{usage:#?}");
    let empty_stdin = Tessera::new("check -")
        .flag("--server", &app.grpc_url)
        .run()
        .await;
    assert_contains(empty_stdin.stderr(2), "no token on stdin");
}

#[tokio::test]
async fn help_texts_say_what_applies_and_give_examples_that_work() {
    let serve = Tessera::new("serve --help").run().await;
    let serve_help = serve.stdout(0);
    for client_flag in [
        "Client options",
        "--server",
        "--admin-key",
        "--ca-cert",
        "--json",
    ] {
        assert!(
            !serve_help.contains(client_flag),
            "serve --help lists {client_flag}:\n{serve_help}"
        );
    }
    assert_contains(serve_help, "--config");

    let token_help = Tessera::new("token list --help").run().await;
    let token_help = token_help.stdout(0);
    assert_contains(token_help, "Client options");
    assert_contains(token_help, "--ca-cert");
    assert!(
        token_help.contains("token, usage, principal, role, api, audit and admin-key"),
        "--admin-key names usage:\n{token_help}"
    );

    // The --expires-at example is a time that is still ahead, so pasting it works.
    let create_help = Tessera::new("token create --help").run().await;
    let create_help = create_help.stdout(0).to_owned();
    let example = create_help
        .split("e.g. ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|word| word.trim_end_matches([';', ',', '.']).to_owned())
        .find(|word| word.contains('T'))
        .expect("an --expires-at example");
    let at = chrono::DateTime::parse_from_rfc3339(&example).expect("the example is RFC 3339");
    assert!(at > chrono::Utc::now(), "{example} is in the past");
}
