//! The operator console's pages over HTTP, on both backends: every page and action is the
//! TokenAdminService call it stands for (rights, scope and audit as over gRPC).

use std::time::Duration;

use tessera::proto;

use super::{http, spawn_console, spawn_console_with};
use crate::backend_tests;
use crate::helpers::Backend;
use crate::helpers::browser::{Browser, Page};
use crate::helpers::requests::check_request;

backend_tests!(
    an_operator_creates_a_token_sees_its_secret_once_then_rotates_suspends_resumes_and_revokes_it,
    principals_and_roles_are_created_changed_and_deleted_from_their_pages,
    usage_shows_the_figures_and_two_svg_charts_that_read_without_the_picture,
    a_viewer_sees_no_write_forms_and_what_its_role_lacks_is_refused,
    api_status_admin_keys_webhooks_and_the_audit_log_work_from_their_pages,
    the_token_list_pages_by_page_token_and_keeps_its_filters,
);

/// The value of the shown-once field `id` on a page.
fn shown_once(page: &Page, id: &str) -> String {
    let marker = format!("id=\"{id}\" type=\"text\" readonly value=\"");
    let start = page
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {id} on the page: {}", page.body))
        + marker.len();
    let end = page.body[start..].find('"').expect("value ends") + start;
    page.body[start..end].to_owned()
}

async fn get_token(app: &crate::helpers::TestApp, id: &str) -> proto::Token {
    app.admin_client()
        .await
        .get_token(app.admin(proto::GetTokenRequest { id: id.to_owned() }))
        .await
        .expect("token")
        .into_inner()
        .token
        .expect("token")
}

async fn an_operator_creates_a_token_sees_its_secret_once_then_rotates_suspends_resumes_and_revokes_it(
    backend: Backend,
) {
    let app = spawn_console(backend).await;
    app.principal("", "alice", &["orders:*"]).await;
    let mut browser = Browser::new(http(&app));
    browser.sign_in(&app.admin_key).await;

    let form = browser.get("/console/tokens/new").await;
    assert_eq!(form.status, 200, "{}", form.body);
    form.assert_contains("label for=\"owner_id\"");
    let csrf = form.csrf();

    let forged = browser
        .post(
            "/console/tokens",
            &[("csrf", "forged"), ("name", "x"), ("owner_id", "alice")],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);

    let invalid = browser
        .post(
            "/console/tokens",
            &[
                ("csrf", &csrf),
                ("name", "<b>bad</b>"),
                ("owner_id", "no such one!"),
            ],
        )
        .await;
    assert_eq!(invalid.status, 400, "{}", invalid.body);
    invalid.assert_contains("role=\"alert\"");
    invalid.assert_contains("owner_id");
    assert!(
        !invalid.body.contains("<b>bad</b>"),
        "escaped: {}",
        invalid.body
    );

    let created = browser
        .post(
            "/console/tokens",
            &[
                ("csrf", &csrf),
                ("name", "ci deploy"),
                ("description", "<script>alert(1)</script>"),
                ("owner_id", "alice"),
                ("permissions", "orders:read\norders:write\n"),
                ("allowed_ips", ""),
                ("ttl_days", "30"),
                ("require_signature", "on"),
                ("metadata", "team=ops"),
                ("credits", "100"),
            ],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    created.assert_contains("Copy it now.");
    let secret = shown_once(&created, "token-secret");
    let signing_key = shown_once(&created, "signing-key");
    assert!(!secret.is_empty() && !signing_key.is_empty());
    let start = created.body.find("/console/tokens/").expect("link") + "/console/tokens/".len();
    let end = created.body[start..].find('"').expect("link ends") + start;
    let id = created.body[start..end].to_owned();

    let token = get_token(&app, &id).await;
    assert_eq!(token.name, "ci deploy");
    assert_eq!(token.permissions, ["orders:read", "orders:write"]);
    assert_eq!(token.metadata.get("team").map(String::as_str), Some("ops"));
    assert!(token.require_signature && token.expires_at.is_some());
    assert_eq!(
        token.credits.as_ref().map(|credits| credits.remaining),
        Some(100)
    );

    let list = browser.get("/console/tokens?owner=alice").await;
    assert_eq!(list.status, 200, "{}", list.body);
    list.assert_contains("ci deploy");
    assert!(!list.body.contains(&secret), "the secret is never listed");

    let path = format!("/console/tokens/{id}");
    let detail = browser.get(&path).await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    detail.assert_contains("data-confirm=\"ci deploy\"");
    detail.assert_contains("&lt;script&gt;alert(1)&lt;/script&gt;");
    assert!(!detail.body.contains("<script>alert"), "escaped");
    assert!(!detail.body.contains(&secret));

    let rotated = browser
        .post(
            &format!("{path}/rotate"),
            &[("csrf", &csrf), ("grace_minutes", "5")],
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new_secret = shown_once(&rotated, "token-secret");
    assert_ne!(new_secret, secret);

    let suspended = browser
        .post(
            &format!("{path}/suspend"),
            &[("csrf", &csrf), ("reason", "investigating")],
        )
        .await;
    assert_eq!(suspended.status, 303, "{}", suspended.body);
    assert_eq!(suspended.location(), Some(path.as_str()));
    assert_eq!(
        get_token(&app, &id).await.state,
        proto::TokenState::Suspended as i32
    );
    browser
        .get(&path)
        .await
        .assert_contains("<span class=\"badge suspended\">suspended</span>");
    let resumed = browser
        .post(&format!("{path}/resume"), &[("csrf", &csrf)])
        .await;
    assert_eq!(resumed.status, 303, "{}", resumed.body);
    assert_eq!(
        get_token(&app, &id).await.state,
        proto::TokenState::Active as i32
    );

    let unconfirmed = browser
        .post(
            &format!("{path}/revoke"),
            &[("csrf", &csrf), ("confirm", "ci")],
        )
        .await;
    assert_eq!(unconfirmed.status, 400, "{}", unconfirmed.body);
    unconfirmed.assert_contains("confirm");
    assert_eq!(
        get_token(&app, &id).await.state,
        proto::TokenState::Active as i32
    );
    let revoked = browser
        .post(
            &format!("{path}/revoke"),
            &[("csrf", &csrf), ("confirm", "ci deploy")],
        )
        .await;
    assert_eq!(revoked.status, 303, "{}", revoked.body);
    assert_eq!(
        get_token(&app, &id).await.state,
        proto::TokenState::Revoked as i32
    );
    let missing = browser.get("/console/tokens/tok_nothere").await;
    assert!(
        missing.status == 404 || missing.status == 400,
        "{}",
        missing.status
    );
}

async fn principals_and_roles_are_created_changed_and_deleted_from_their_pages(backend: Backend) {
    let app = spawn_console(backend).await;
    let mut browser = Browser::new(http(&app));
    browser.sign_in(&app.admin_key).await;
    let page = browser.get("/console/principals").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page.csrf();

    let saved = browser
        .post(
            "/console/principals",
            &[
                ("csrf", &csrf),
                ("id", "bob"),
                ("permissions", "orders:read\n  \nbilling:write"),
                ("disabled", "on"),
                ("rate_limit", "120"),
            ],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let principal = app
        .admin_client()
        .await
        .get_principal(app.admin(proto::GetPrincipalRequest {
            id: "bob".to_owned(),
            ..Default::default()
        }))
        .await
        .expect("principal")
        .into_inner()
        .principal
        .expect("principal");
    assert_eq!(principal.permissions, ["billing:write", "orders:read"]);
    assert!(principal.disabled);
    assert_eq!(principal.rate_limit_per_minute, Some(120));

    let edit = browser.get("/console/principals?edit=bob").await;
    assert_eq!(edit.status, 200, "{}", edit.body);
    edit.assert_contains("<span class=\"badge revoked\">disabled</span>");
    edit.assert_contains("billing:write");
    edit.assert_contains("checked");

    let bad = browser
        .post(
            "/console/principals",
            &[("csrf", &csrf), ("id", "not ok!"), ("rate_limit", "lots")],
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    bad.assert_contains("rate_limit");

    let role = browser
        .post(
            "/console/roles",
            &[
                ("csrf", &csrf),
                ("name", "reader"),
                ("permissions", "orders:read"),
            ],
        )
        .await;
    assert_eq!(role.status, 303, "{}", role.body);
    let roles = browser.get("/console/roles").await;
    roles.assert_contains("<code>reader</code>");
    roles.assert_contains("Delete role reader");
    let deleted = browser
        .post(
            "/console/roles/delete",
            &[("csrf", &csrf), ("name", "reader")],
        )
        .await;
    assert_eq!(deleted.status, 303, "{}", deleted.body);
    let left = app
        .admin_client()
        .await
        .list_roles(app.admin(proto::ListRolesRequest::default()))
        .await
        .expect("roles")
        .into_inner();
    assert!(left.roles.is_empty(), "{:?}", left.roles);
    let gone = browser
        .post(
            "/console/roles/delete",
            &[("csrf", &csrf), ("name", "reader")],
        )
        .await;
    assert_eq!(gone.status, 404, "{}", gone.body);
}

async fn usage_shows_the_figures_and_two_svg_charts_that_read_without_the_picture(
    backend: Backend,
) {
    let app = spawn_console_with(backend, |settings| {
        settings.usage_flush_interval_ms = 50;
    })
    .await;
    app.principal("", "alice", &["orders:*"]).await;
    let (token, secret) = app
        .token(crate::helpers::new_token("", "alice", &["orders:read"]))
        .await;
    for _ in 0..3 {
        let mut request = check_request("", &secret, "orders:read");
        request.endpoint = "GET /orders".to_owned();
        app.check(request).await;
    }
    let mut browser = Browser::new(http(&app));
    browser.sign_in(&app.admin_key).await;
    let empty = browser.get("/console/usage").await;
    assert_eq!(empty.status, 200, "{}", empty.body);

    let path = format!("/console/usage?token={}", token.id);
    let mut page = browser.get(&path).await;
    for _ in 0..100 {
        if page.body.contains("GET /orders") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        page = browser.get(&path).await;
    }
    assert_eq!(page.status, 200, "{}", page.body);
    page.assert_contains("<svg");
    page.assert_contains("role=\"img\"");
    page.assert_contains("<title id=\"calls-chart-title\">Calls per day</title>");
    page.assert_contains("<title id=\"success-chart-title\">Success rate per day</title>");
    page.assert_contains("<rect");
    page.assert_contains("GET /orders");
    page.assert_contains("100.0%");
    page.assert_contains("<th scope=\"col\">Calls</th>");

    let owner = browser.get("/console/usage?owner=alice&days=7").await;
    assert_eq!(owner.status, 200, "{}", owner.body);
    owner.assert_contains("Usage of owner alice");
    let bad = browser.get("/console/usage?owner=alice&days=many").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
}

async fn a_viewer_sees_no_write_forms_and_what_its_role_lacks_is_refused(backend: Backend) {
    let app = spawn_console(backend).await;
    app.principal("shop", "alice", &["orders:*"]).await;
    let created = app
        .admin_client()
        .await
        .create_admin_key(app.admin(proto::CreateAdminKeyRequest {
            name: "viewer".to_owned(),
            role: proto::AdminRole::Viewer as i32,
            tenants: vec!["shop".to_owned()],
            ..Default::default()
        }))
        .await
        .expect("admin key")
        .into_inner();
    let mut browser = Browser::new(http(&app));
    browser.sign_in(&created.secret).await;

    let tenants = browser.get("/console/tenants").await;
    assert_eq!(tenants.status, 200, "{}", tenants.body);
    tenants.assert_contains("href=\"/console/tokens?tenant=shop\"");

    let tokens = browser.get("/console/tokens?tenant=shop").await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    assert!(!tokens.body.contains("Create token"), "{}", tokens.body);
    tokens.assert_contains("href=\"/console/principals?tenant=shop\"");
    let principals = browser.get("/console/principals?tenant=shop").await;
    assert_eq!(principals.status, 200, "{}", principals.body);
    principals.assert_contains("alice");
    assert!(!principals.body.contains("Save principal"));
    let roles = browser.get("/console/roles?tenant=shop").await;
    assert!(!roles.body.contains("Save role"));
    let status = browser.get("/console/status?tenant=shop").await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert!(!status.body.contains("Set tenant status"));

    let keys = browser.get("/console/admin-keys").await;
    assert_eq!(keys.status, 403, "{}", keys.body);
    let other = browser.get("/console/tokens?tenant=other").await;
    assert_eq!(other.status, 403, "{}", other.body);

    let csrf = tokens.csrf();
    let refused = browser
        .post(
            "/console/roles",
            &[
                ("csrf", &csrf),
                ("tenant", "shop"),
                ("name", "reader"),
                ("permissions", "orders:read"),
            ],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    refused.assert_contains("role=\"alert\"");
}

async fn api_status_admin_keys_webhooks_and_the_audit_log_work_from_their_pages(backend: Backend) {
    let app = spawn_console(backend).await;
    let mut browser = Browser::new(http(&app));
    browser.sign_in(&app.admin_key).await;
    let page = browser.get("/console/status").await;
    assert_eq!(page.status, 200, "{}", page.body);
    page.assert_contains("Set global status");
    let csrf = page.csrf();

    let offline = browser
        .post(
            "/console/status",
            &[
                ("csrf", &csrf),
                ("scope", "tenant"),
                ("online", "offline"),
                ("message", "maintenance until noon"),
            ],
        )
        .await;
    assert_eq!(offline.status, 303, "{}", offline.body);
    let status = app
        .admin_client()
        .await
        .get_api_status(app.admin(proto::GetApiStatusRequest::default()))
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("status");
    assert!(!status.online);
    browser
        .get("/console/status")
        .await
        .assert_contains("maintenance until noon");
    let global = browser
        .post(
            "/console/status",
            &[("csrf", &csrf), ("scope", "global"), ("online", "online")],
        )
        .await;
    assert_eq!(global.status, 303, "{}", global.body);

    let key = browser
        .post(
            "/console/admin-keys",
            &[
                ("csrf", &csrf),
                ("name", "ci robot"),
                ("role", "token_manager"),
                ("tenants", "shop"),
                ("ttl_days", "7"),
            ],
        )
        .await;
    assert_eq!(key.status, 200, "{}", key.body);
    let secret = shown_once(&key, "admin-key-secret");
    assert!(secret.starts_with("tsa_"), "{secret}");
    let keys = browser.get("/console/admin-keys").await;
    keys.assert_contains("ci robot");
    assert!(!keys.body.contains(&secret));
    let listed = app
        .admin_client()
        .await
        .list_admin_keys(app.admin(proto::ListAdminKeysRequest::default()))
        .await
        .expect("keys")
        .into_inner();
    let robot = listed
        .admin_keys
        .iter()
        .find(|key| key.name == "ci robot")
        .expect("created key");
    assert_eq!(robot.tenants, ["shop"]);
    let revoked = browser
        .post(
            &format!("/console/admin-keys/{}/revoke", robot.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(revoked.status, 303, "{}", revoked.body);

    let webhook = browser
        .post(
            "/console/webhooks",
            &[
                ("csrf", &csrf),
                ("url", "http://127.0.0.1:9/hook"),
                ("event_types", "token.created\ntoken.revoked"),
                ("description", "ops"),
            ],
        )
        .await;
    assert_eq!(webhook.status, 200, "{}", webhook.body);
    assert!(!shown_once(&webhook, "webhook-secret").is_empty());
    let hooks = app
        .admin_client()
        .await
        .list_webhooks(app.admin(proto::ListWebhooksRequest::default()))
        .await
        .expect("webhooks")
        .into_inner();
    let hook = hooks.webhooks.first().expect("webhook");
    assert_eq!(hook.event_types, ["token.created", "token.revoked"]);
    let list = browser.get("/console/webhooks").await;
    list.assert_contains("http://127.0.0.1:9/hook");
    let deliveries = browser.get(&format!("/console/webhooks/{}", hook.id)).await;
    assert_eq!(deliveries.status, 200, "{}", deliveries.body);
    let bad = browser
        .post(
            "/console/webhooks",
            &[("csrf", &csrf), ("url", "not a url")],
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let deleted = browser
        .post(
            &format!("/console/webhooks/{}/delete", hook.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(deleted.status, 303, "{}", deleted.body);

    // A key of every tenant types the tenant; the pages keep it in their links and forms.
    let tenants = browser.get("/console/tenants").await;
    tenants.assert_contains("<label for=\"tenant\">Tenant</label>");
    let shop = browser.get("/console/webhooks?tenant=shop").await;
    assert_eq!(shop.status, 200, "{}", shop.body);
    shop.assert_contains("href=\"/console/audit?tenant=shop\"");
    shop.assert_contains("name=\"tenant\" value=\"shop\"");

    let audit = browser.get("/console/audit").await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    audit.assert_contains("console.sign_in");
    audit.assert_contains("<code>admin_key.create</code>");

    // Filtered: only the sign-ins, and the filter stays in the form.
    let sign_ins = browser.get("/console/audit?action=console.sign_in").await;
    assert_eq!(sign_ins.status, 200, "{}", sign_ins.body);
    sign_ins.assert_contains("<code>console.sign_in</code>");
    sign_ins.assert_contains("name=\"action\" type=\"text\" value=\"console.sign_in\"");
    assert!(
        !sign_ins.body.contains("<code>admin_key.create</code>"),
        "{}",
        sign_ins.body
    );
    let bad = browser.get("/console/audit?token_id=not-a-token").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    bad.assert_contains("<code>token_id</code>");
}

async fn the_token_list_pages_by_page_token_and_keeps_its_filters(backend: Backend) {
    let app = spawn_console(backend).await;
    app.principal("", "alice", &["orders:*"]).await;
    app.principal("", "bob", &["orders:*"]).await;
    for _ in 0..51 {
        app.token(crate::helpers::new_token("", "alice", &["orders:read"]))
            .await;
    }
    let (bobs, _) = app
        .token(crate::helpers::new_token("", "bob", &["orders:read"]))
        .await;
    let mut browser = Browser::new(http(&app));
    browser.sign_in(&app.admin_key).await;
    let first = browser.get("/console/tokens?owner=alice").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body.matches("<td>alice</td>").count(), 50);
    assert!(!first.body.contains(&bobs.id), "filtered by owner");
    let marker = "<p class=\"pager\"><a href=\"";
    let start = first.body.find(marker).expect("a next page") + marker.len();
    let end = first.body[start..].find('"').expect("link ends") + start;
    let next = first.body[start..end].replace("&amp;", "&");
    assert!(
        next.contains("owner=alice") && next.contains("page_token="),
        "{next}"
    );
    let second = browser.get(&next).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body.matches("<td>alice</td>").count(), 1);
    assert!(!second.body.contains("Next page"));
}
