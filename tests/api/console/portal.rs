//! The self-service portal's pages over HTTP, on both backends: one principal's tokens listed,
//! created (secret and signing key shown once), edited, rotated, revoked and their usage read;
//! another principal's token is not found by id; nothing beyond the principal's permissions can
//! be given; every form needs its CSRF token; the tenant's branding shows, and
//! SetPortalBranding/GetPortalBranding over gRPC.

use std::time::Duration;

use tessera::proto;
use tonic_types::StatusExt as _;

use super::{http, spawn_console, spawn_console_with};
use crate::backend_tests;
use crate::helpers::browser::{Browser, Page};
use crate::helpers::requests::check_request;
use crate::helpers::{Backend, TestApp, new_token, strings, with_key};

backend_tests!(
    the_portal_lists_only_the_principals_own_tokens_with_their_dates_and_state,
    a_created_token_belongs_to_the_principal_and_its_secret_and_signing_key_show_once,
    only_permissions_and_roles_within_the_principals_own_are_offered_or_accepted,
    editing_changes_name_description_allowed_ips_and_rate_limit_and_nothing_else,
    rotating_shows_the_new_secret_once_and_keeps_the_old_one_for_the_grace_period,
    revoking_needs_the_tokens_name_typed_exactly,
    another_principals_token_is_not_found_by_id_for_every_page_and_action,
    the_usage_pages_show_the_figures_and_svg_charts_of_calls_per_day,
    every_portal_form_needs_the_sessions_csrf_token,
    the_tenants_branding_appears_in_the_portal,
    portal_branding_is_set_and_read_over_grpc_within_the_callers_rights_and_tenants,
    a_portal_session_stays_in_its_tenant_even_for_a_principal_of_the_same_id_elsewhere,
    the_token_list_pages_by_fifty,
    what_a_caller_wrote_is_escaped_on_every_portal_page,
);

/// A portal session of `principal` (default tenant), entered: a browser holding its cookie.
async fn portal_of(app: &TestApp, principal: &str) -> Browser {
    portal_in(app, "", principal).await
}

/// A portal session of `principal` in `tenant`, entered.
async fn portal_in(app: &TestApp, tenant: &str, principal: &str) -> Browser {
    let opened = super::open_portal(app, tenant, principal).await;
    let mut browser = Browser::new(http(app));
    let entered = browser.get(&opened.url).await;
    assert_eq!(entered.status, 200, "{}", entered.body);
    browser
}

/// A token of `owner` named `name`, made over gRPC: its id and secret.
async fn token_of(
    app: &TestApp,
    owner: &str,
    name: &str,
    permissions: &[&str],
) -> (String, String) {
    let mut request = new_token("", owner, permissions);
    request.name = name.to_owned();
    let (token, secret) = app.token(request).await;
    (token.id, secret)
}

async fn get_token(app: &TestApp, id: &str) -> proto::Token {
    app.admin_client()
        .await
        .get_token(app.admin(proto::GetTokenRequest { id: id.to_owned() }))
        .await
        .expect("token read")
        .into_inner()
        .token
        .expect("token")
}

async fn tokens_of(app: &TestApp, owner: &str) -> Vec<proto::Token> {
    app.admin_client()
        .await
        .list_tokens(app.admin(proto::ListTokensRequest {
            owner_id: owner.to_owned(),
            include_revoked: true,
            ..Default::default()
        }))
        .await
        .expect("tokens listed")
        .into_inner()
        .tokens
}

/// The value of the read-only field `id` on a shown-once page.
fn shown_secret(page: &Page, id: &str) -> String {
    let marker = format!("id=\"{id}\" type=\"text\" readonly value=\"");
    let start = page
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {id} field on the page: {}", page.body))
        + marker.len();
    let end = page.body[start..].find('"').expect("value ends") + start;
    page.body[start..end].to_owned()
}

/// The page's CSRF token, after a GET of `path` that must answer 200.
async fn csrf_at(browser: &mut Browser, path: &str) -> String {
    let page = browser.get(path).await;
    assert_eq!(page.status, 200, "{path}: {}", page.body);
    page.csrf()
}

async fn the_portal_lists_only_the_principals_own_tokens_with_their_dates_and_state(
    backend: Backend,
) {
    let app = spawn_console(backend).await;
    app.principal("", "alice", &["orders:*"]).await;
    app.principal("", "bob", &["orders:*"]).await;
    let (build, _) = token_of(&app, "alice", "alice build", &["orders:read"]).await;
    let (old, _) = token_of(&app, "alice", "alice old", &["orders:read"]).await;
    token_of(&app, "bob", "bob deploy", &["orders:read"]).await;
    app.admin_client()
        .await
        .revoke_token(app.admin(proto::RevokeTokenRequest { id: old.clone() }))
        .await
        .expect("revoked");

    let mut browser = portal_of(&app, "alice").await;
    let list = browser.get("/portal/").await;
    assert_eq!(list.status, 200, "{}", list.body);
    list.assert_contains("alice build");
    list.assert_contains(&format!("href=\"/portal/tokens/{build}\""));
    list.assert_contains("<th scope=\"col\">Last used</th>");
    list.assert_contains("Never");
    list.assert_contains("Active");
    list.assert_contains("Back to the application");
    assert!(!list.body.contains("bob deploy"), "{}", list.body);
    assert!(
        !list.body.contains("alice old"),
        "revoked tokens are hidden by default"
    );

    let with_revoked = browser.get("/portal/?revoked=1").await;
    assert_eq!(with_revoked.status, 200, "{}", with_revoked.body);
    with_revoked.assert_contains("alice old");
    with_revoked.assert_contains("Revoked");
    assert!(!with_revoked.body.contains("bob deploy"));

    let detail = browser.get(&format!("/portal/tokens/{build}")).await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    detail.assert_contains("<h1>Token alice build</h1>");
    detail.assert_contains("<code>orders:read</code>");
    detail.assert_contains(&format!("href=\"/portal/tokens/{build}/rotate\""));
    let revoked = browser.get(&format!("/portal/tokens/{old}")).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert!(
        !revoked.body.contains("/revoke\""),
        "a revoked token offers no revoke: {}",
        revoked.body
    );
}

async fn a_created_token_belongs_to_the_principal_and_its_secret_and_signing_key_show_once(
    backend: Backend,
) {
    let app = spawn_console(backend).await;
    app.principal("", "alice", &["orders:*", "invoices:read"])
        .await;
    app.principal("", "bob", &["orders:*", "invoices:read"])
        .await;
    let mut browser = portal_of(&app, "alice").await;
    let form = browser.get("/portal/tokens/new").await;
    assert_eq!(form.status, 200, "{}", form.body);
    form.assert_contains("value=\"orders:*\"");
    form.assert_contains("value=\"invoices:read\"");
    form.assert_contains("<label for=\"name\">");
    let csrf = form.csrf();

    let created = browser
        .post(
            "/portal/tokens",
            &[
                ("csrf", &csrf),
                ("name", "ci pipeline"),
                ("description", "builds"),
                ("permissions", "invoices:read"),
                ("extra_permissions", "orders:read\n"),
                ("allowed_ips", ""),
                ("rate_limit", "600"),
                ("ttl_days", "30"),
                ("expires_on", ""),
                // Whatever the form says, the token is the session's principal's.
                ("owner_id", "bob"),
            ],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    created.assert_contains("Token created");
    created.assert_contains("aria-live=\"assertive\"");
    created.assert_contains("data-copy=\"#secret\"");
    created.assert_contains("shown only once");
    assert_eq!(created.header("cache-control"), Some("no-store"));
    assert!(
        !created.body.contains("id=\"signing-key\""),
        "no signing key without signatures"
    );
    let secret = shown_secret(&created, "secret");

    assert!(tokens_of(&app, "bob").await.is_empty(), "bob got nothing");
    let mine = tokens_of(&app, "alice").await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    let token = &mine[0];
    assert_eq!(token.name, "ci pipeline");
    assert_eq!(token.description, "builds");
    assert_eq!(
        token.permissions,
        strings(&["invoices:read", "orders:read"])
    );
    assert_eq!(token.rate_limit_per_minute, 600);
    let expires = token.expires_at.as_ref().expect("expiry").seconds;
    let in_30_days = chrono::Utc::now().timestamp() + 30 * 86_400;
    assert!(
        (expires - in_30_days).abs() < 300,
        "{expires} vs {in_30_days}"
    );

    let allowed = app.check(check_request("", &secret, "orders:read")).await;
    assert!(allowed.allowed, "{allowed:?}");
    let denied = app.check(check_request("", &secret, "orders:write")).await;
    assert!(!denied.allowed, "{denied:?}");

    // Never again: not on the token's page, not in the list.
    let detail = browser.get(&format!("/portal/tokens/{}", token.id)).await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert!(!detail.body.contains(&secret));
    let list = browser.get("/portal/").await;
    list.assert_contains("ci pipeline");
    assert!(!list.body.contains(&secret));

    // A token that requires signatures shows its signing key once too.
    let signing = browser
        .post(
            "/portal/tokens",
            &[
                ("csrf", &csrf),
                ("name", "signed"),
                ("permissions", "orders:*"),
                ("require_signature", "on"),
                ("expires_on", "2030-01-31"),
            ],
        )
        .await;
    assert_eq!(signing.status, 200, "{}", signing.body);
    let signing_key = shown_secret(&signing, "signing-key");
    assert!(!signing_key.is_empty());
    assert_ne!(signing_key, shown_secret(&signing, "secret"));
    let signed = tokens_of(&app, "alice")
        .await
        .into_iter()
        .find(|token| token.name == "signed")
        .expect("signed token");
    assert!(signed.require_signature);
    let expiry = chrono::DateTime::from_timestamp(signed.expires_at.expect("expiry").seconds, 0)
        .expect("time");
    assert_eq!(expiry.format("%Y-%m-%d").to_string(), "2030-01-31");

    // A form the server refuses comes back with its problem and what was typed.
    let refused = browser
        .post(
            "/portal/tokens",
            &[("csrf", &csrf), ("name", ""), ("description", "kept <b>")],
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    refused.assert_contains("role=\"alert\"");
    refused.assert_contains("kept &lt;b&gt;");
    let both = browser
        .post(
            "/portal/tokens",
            &[
                ("csrf", &csrf),
                ("name", "x"),
                ("ttl_days", "3"),
                ("expires_on", "2030-01-01"),
            ],
        )
        .await;
    assert_eq!(both.status, 400, "{}", both.body);
    both.assert_contains("not both");
    assert_eq!(tokens_of(&app, "alice").await.len(), 2);
}

async fn only_permissions_and_roles_within_the_principals_own_are_offered_or_accepted(
    backend: Backend,
) {
    let app = spawn_console(backend).await;
    app.principal("", "alice", &["orders:*"]).await;
    for (name, permissions) in [
        ("order-reader", &["orders:read"][..]),
        ("superuser", &["*"][..]),
        ("mixed", &["orders:read", "users:write"][..]),
    ] {
        app.admin_client()
            .await
            .upsert_role(app.admin(proto::UpsertRoleRequest {
                name: name.to_owned(),
                permissions: strings(permissions),
                ..Default::default()
            }))
            .await
            .expect("role");
    }
    let mut browser = portal_of(&app, "alice").await;
    let form = browser.get("/portal/tokens/new").await;
    assert_eq!(form.status, 200, "{}", form.body);
    form.assert_contains("value=\"order-reader\"");
    assert!(!form.body.contains("superuser"), "{}", form.body);
    assert!(!form.body.contains("value=\"mixed\""), "{}", form.body);
    assert!(!form.body.contains("users:write"), "{}", form.body);
    let csrf = form.csrf();

    for fields in [
        &[("permissions", "users:write")][..],
        &[("permissions", "*")][..],
        &[("extra_permissions", "orders:read\nusers:*")][..],
        &[("roles", "superuser")][..],
        &[("roles", "mixed")][..],
        &[("permissions", "not a permission")][..],
    ] {
        let mut posted = vec![("csrf", csrf.as_str()), ("name", "too much")];
        posted.extend_from_slice(fields);
        let refused = browser.post("/portal/tokens", &posted).await;
        assert_eq!(refused.status, 400, "{fields:?}: {}", refused.body);
        refused.assert_contains("role=\"alert\"");
    }
    let beyond = browser
        .post(
            "/portal/tokens",
            &[
                ("csrf", &csrf),
                ("name", "x"),
                ("permissions", "users:write"),
            ],
        )
        .await;
    beyond.assert_contains("beyond your own permissions: users:write");
    assert!(
        tokens_of(&app, "alice").await.is_empty(),
        "nothing was created"
    );

    let with_role = browser
        .post(
            "/portal/tokens",
            &[
                ("csrf", &csrf),
                ("name", "reader"),
                ("roles", "order-reader"),
            ],
        )
        .await;
    assert_eq!(with_role.status, 200, "{}", with_role.body);
    let mine = tokens_of(&app, "alice").await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].roles, strings(&["order-reader"]));
}

async fn editing_changes_name_description_allowed_ips_and_rate_limit_and_nothing_else(
    backend: Backend,
) {
    let app = spawn_console(backend).await;
    app.principal("", "alice", &["orders:*"]).await;
    let (id, _) = token_of(&app, "alice", "before", &["orders:read"]).await;
    let mut browser = portal_of(&app, "alice").await;
    let path = format!("/portal/tokens/{id}/edit");
    let form = browser.get(&path).await;
    assert_eq!(form.status, 200, "{}", form.body);
    form.assert_contains("value=\"before\"");
    let csrf = form.csrf();
    let etag = get_token(&app, &id).await.etag;

    let saved = browser
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("etag", &etag),
                ("name", "after"),
                ("description", "the nightly job"),
                ("allowed_ips", "10.0.0.0/8\n\n192.0.2.1\n"),
                ("rate_limit", "120"),
            ],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    assert_eq!(
        saved.location(),
        Some(format!("/portal/tokens/{id}?notice=updated").as_str())
    );
    let token = get_token(&app, &id).await;
    assert_eq!(token.name, "after");
    assert_eq!(token.description, "the nightly job");
    assert_eq!(token.allowed_ips, strings(&["10.0.0.0/8", "192.0.2.1"]));
    assert_eq!(token.rate_limit_per_minute, 120);
    assert_eq!(token.permissions, strings(&["orders:read"]));
    let detail = browser
        .get(&format!("/portal/tokens/{id}?notice=updated"))
        .await;
    detail.assert_contains("Your changes were saved.");
    detail.assert_contains("<code>192.0.2.1</code>");

    // The version the form was made from is gone: nothing is written.
    let stale = browser
        .post(
            &path,
            &[("csrf", &csrf), ("etag", &etag), ("name", "stale")],
        )
        .await;
    assert_eq!(stale.status, 409, "{}", stale.body);
    let invalid = browser
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("name", "after"),
                ("allowed_ips", "not-an-ip"),
            ],
        )
        .await;
    assert_eq!(invalid.status, 400, "{}", invalid.body);
    invalid.assert_contains("allowed_ips");
    invalid.assert_contains("not-an-ip");
    assert_eq!(get_token(&app, &id).await.name, "after");
}

async fn rotating_shows_the_new_secret_once_and_keeps_the_old_one_for_the_grace_period(
    backend: Backend,
) {
    let app = spawn_console(backend).await;
    app.principal("", "alice", &["orders:*"]).await;
    let (id, old_secret) = token_of(&app, "alice", "rotating", &["orders:read"]).await;
    let mut browser = portal_of(&app, "alice").await;
    let path = format!("/portal/tokens/{id}/rotate");
    let form = browser.get(&path).await;
    assert_eq!(form.status, 200, "{}", form.body);
    form.assert_contains("<label for=\"grace_seconds\">");
    let csrf = form.csrf();
    let rotated = browser
        .post(&path, &[("csrf", &csrf), ("grace_seconds", "3600")])
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    rotated.assert_contains("Token rotated");
    rotated.assert_contains("1 hour");
    let new_secret = shown_secret(&rotated, "secret");
    assert_ne!(new_secret, old_secret);
    assert!(
        app.check(check_request("", &new_secret, "orders:read"))
            .await
            .allowed
    );
    assert!(
        app.check(check_request("", &old_secret, "orders:read"))
            .await
            .allowed,
        "the old secret works during its grace period"
    );
    assert!(get_token(&app, &id).await.rotated_at.is_some());
    let detail = browser.get(&format!("/portal/tokens/{id}")).await;
    assert!(!detail.body.contains(&new_secret));

    // Without grace the previous secret stops at once.
    let again = browser
        .post(&path, &[("csrf", &csrf), ("grace_seconds", "0")])
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    let newest = shown_secret(&again, "secret");
    assert!(
        !app.check(check_request("", &new_secret, "orders:read"))
            .await
            .allowed
    );
    assert!(
        app.check(check_request("", &newest, "orders:read"))
            .await
            .allowed
    );

    let too_long = browser
        .post(&path, &[("csrf", &csrf), ("grace_seconds", "999999")])
        .await;
    assert_eq!(too_long.status, 400, "{}", too_long.body);
    too_long.assert_contains("grace_period");
}

async fn revoking_needs_the_tokens_name_typed_exactly(backend: Backend) {
    let app = spawn_console(backend).await;
    app.principal("", "alice", &["orders:*"]).await;
    let (id, secret) = token_of(&app, "alice", "to go", &["orders:read"]).await;
    let mut browser = portal_of(&app, "alice").await;
    let path = format!("/portal/tokens/{id}/revoke");
    let form = browser.get(&path).await;
    assert_eq!(form.status, 200, "{}", form.body);
    form.assert_contains("data-confirm=\"to go\"");
    form.assert_contains("<label for=\"confirm\">");
    let csrf = form.csrf();

    for typed in ["", "to g", "TO GO", "to go "] {
        let refused = browser
            .post(&path, &[("csrf", &csrf), ("confirm", typed)])
            .await;
        assert_eq!(refused.status, 400, "{typed:?}: {}", refused.body);
        refused.assert_contains("does not match the token");
    }
    assert_eq!(
        get_token(&app, &id).await.state,
        proto::TokenState::Active as i32
    );

    let revoked = browser
        .post(&path, &[("csrf", &csrf), ("confirm", "to go")])
        .await;
    assert_eq!(revoked.status, 303, "{}", revoked.body);
    assert_eq!(revoked.location(), Some("/portal/?notice=revoked"));
    assert_eq!(
        get_token(&app, &id).await.state,
        proto::TokenState::Revoked as i32
    );
    assert!(
        !app.check(check_request("", &secret, "orders:read"))
            .await
            .allowed
    );
    let list = browser.get("/portal/?notice=revoked").await;
    list.assert_contains("The token was revoked.");
    assert!(!list.body.contains("to go"), "{}", list.body);

    // The audit log names the portal user.
    let audit = app
        .admin_client()
        .await
        .list_audit_events(app.admin(proto::ListAuditEventsRequest::default()))
        .await
        .expect("audit")
        .into_inner();
    let event = audit
        .events
        .iter()
        .find(|event| event.action == "token.revoke")
        .expect("revocation audited");
    assert_eq!(event.actor, "portal:alice");
}

async fn another_principals_token_is_not_found_by_id_for_every_page_and_action(backend: Backend) {
    let app = spawn_console(backend).await;
    app.principal("", "alice", &["orders:*"]).await;
    app.principal("", "bob", &["orders:*"]).await;
    let (bobs, bobs_secret) = token_of(&app, "bob", "bob's", &["orders:read"]).await;
    let missing = "tok_01HZZZZZZZZZZZZZZZZZZZZZZZ";
    let mut browser = portal_of(&app, "alice").await;
    let csrf = csrf_at(&mut browser, "/portal/").await;

    let mut bodies = Vec::new();
    for id in [bobs.as_str(), missing, "not-a-token-id"] {
        for suffix in ["", "/edit", "/rotate", "/revoke", "/usage"] {
            let path = format!("/portal/tokens/{id}{suffix}");
            let page = browser.get(&path).await;
            assert_eq!(page.status, 404, "{path}: {}", page.body);
            page.assert_contains("Token not found");
            assert!(!page.body.contains("bob"), "{path}: {}", page.body);
            bodies.push(page.body);
        }
        for (suffix, fields) in [
            ("/edit", &[("name", "taken")][..]),
            ("/rotate", &[("grace_seconds", "0")][..]),
            ("/revoke", &[("confirm", "bob's")][..]),
        ] {
            let path = format!("/portal/tokens/{id}{suffix}");
            let mut posted = vec![("csrf", csrf.as_str())];
            posted.extend_from_slice(fields);
            let page = browser.post(&path, &posted).await;
            assert_eq!(page.status, 404, "{path}: {}", page.body);
            bodies.push(page.body);
        }
    }
    // Missing and someone else's read the same.
    assert!(
        bodies.windows(2).all(|pair| pair[0] == pair[1]),
        "{bodies:?}"
    );

    let token = get_token(&app, &bobs).await;
    assert_eq!(token.name, "bob's");
    assert_eq!(token.state, proto::TokenState::Active as i32);
    assert!(token.rotated_at.is_none());
    assert!(
        app.check(check_request("", &bobs_secret, "orders:read"))
            .await
            .allowed
    );
}

async fn the_usage_pages_show_the_figures_and_svg_charts_of_calls_per_day(backend: Backend) {
    let app = spawn_console_with(backend, |settings| {
        settings.usage_flush_interval_ms = 50;
    })
    .await;
    app.principal("", "alice", &["orders:*"]).await;
    let (id, secret) = token_of(&app, "alice", "used", &["orders:read"]).await;
    for _ in 0..3 {
        app.check(proto::CheckRequest {
            endpoint: "GET /api/orders".to_owned(),
            client_ip: "192.0.2.10".to_owned(),
            ..check_request("", &secret, "orders:read")
        })
        .await;
    }
    app.check(proto::CheckRequest {
        endpoint: "POST /api/orders".to_owned(),
        ..check_request("", &secret, "orders:write")
    })
    .await;

    let mut browser = portal_of(&app, "alice").await;
    let path = format!("/portal/tokens/{id}/usage");
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    let page = loop {
        let page = browser.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        // Every figure in: the totals and the recent calls are flushed in separate steps.
        let flushed = page.body.contains("POST /api/orders")
            && page
                .body
                .contains("<span class=\"value\">4</span><span class=\"label\">Total calls</span>")
            && page.body.contains("75.0%");
        if flushed || tokio::time::Instant::now() > give_up {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    page.assert_contains("<h1>Usage of used</h1>");
    page.assert_contains("<span class=\"value\">4</span><span class=\"label\">Total calls</span>");
    page.assert_contains("75.0%");
    page.assert_contains("<code>GET /api/orders</code></td><td>3</td>");
    page.assert_contains("Denied (permission denied)");
    page.assert_contains("192.0.2.10");
    page.assert_contains("<svg");
    page.assert_contains("role=\"img\"");
    page.assert_contains("<title id=\"calls-chart-title\">Calls per day</title>");
    page.assert_contains("4 calls in the last");
    page.assert_contains("class=\"bar\"");
    page.assert_contains("<th scope=\"col\">Day (UTC)</th>");

    let all = browser.get("/portal/usage").await;
    assert_eq!(all.status, 200, "{}", all.body);
    all.assert_contains("Usage of all your tokens");
    all.assert_contains(&format!("href=\"/portal/tokens/{id}\""));
    all.assert_contains("<svg");
}

async fn every_portal_form_needs_the_sessions_csrf_token(backend: Backend) {
    let app = spawn_console(backend).await;
    app.principal("", "alice", &["orders:*"]).await;
    let (id, _) = token_of(&app, "alice", "kept", &["orders:read"]).await;
    let mut browser = portal_of(&app, "alice").await;
    let csrf = csrf_at(&mut browser, "/portal/").await;
    // Another session's token is no better than none.
    let mut other = portal_of(&app, "alice").await;
    let others = csrf_at(&mut other, "/portal/").await;
    assert_ne!(csrf, others);

    let forms = [
        (
            "/portal/tokens".to_owned(),
            vec![("name", "forged"), ("permissions", "orders:read")],
        ),
        (
            format!("/portal/tokens/{id}/edit"),
            vec![("name", "forged")],
        ),
        (
            format!("/portal/tokens/{id}/rotate"),
            vec![("grace_seconds", "0")],
        ),
        (
            format!("/portal/tokens/{id}/revoke"),
            vec![("confirm", "kept")],
        ),
    ];
    for (path, fields) in &forms {
        for token in [None, Some(""), Some("forged"), Some(others.as_str())] {
            let mut posted = fields.clone();
            if let Some(token) = token {
                posted.push(("csrf", token));
            }
            let page = browser.post(path, &posted).await;
            assert_eq!(page.status, 403, "{path} with {token:?}: {}", page.body);
        }
    }
    let token = get_token(&app, &id).await;
    assert_eq!(token.name, "kept");
    assert_eq!(token.state, proto::TokenState::Active as i32);
    assert!(token.rotated_at.is_none());
    assert_eq!(tokens_of(&app, "alice").await.len(), 1);
    assert_eq!(browser.get("/portal/").await.status, 200, "still signed in");

    // Without a session there is no page at all.
    let mut stranger = Browser::new(http(&app));
    assert_eq!(stranger.get("/portal/").await.status, 401);
    let posted = stranger
        .post("/portal/tokens", &[("csrf", &csrf), ("name", "x")])
        .await;
    assert_eq!(posted.status, 401, "{}", posted.body);
}

async fn the_tenants_branding_appears_in_the_portal(backend: Backend) {
    let app = spawn_console(backend).await;
    app.principal("", "alice", &["orders:*"]).await;
    let mut browser = portal_of(&app, "alice").await;
    let plain = browser.get("/portal/").await;
    plain.assert_contains("<span>API tokens</span>");
    assert!(!plain.body.contains("/portal/theme.css"), "{}", plain.body);
    assert!(!plain.body.contains("class=\"logo\""), "{}", plain.body);

    app.admin_client()
        .await
        .set_portal_branding(app.admin(proto::SetPortalBrandingRequest {
            branding: Some(proto::PortalBranding {
                product_name: "Acme <Tools>".to_owned(),
                logo_url: "https://acme.example/logo.png".to_owned(),
                accent_color: "#AA3300".to_owned(),
                ..Default::default()
            }),
        }))
        .await
        .expect("branding set");
    let branded = browser.get("/portal/").await;
    assert_eq!(branded.status, 200, "{}", branded.body);
    branded.assert_contains("<span>Acme &lt;Tools&gt;</span>");
    branded.assert_contains("<title>API tokens · Acme &lt;Tools&gt;</title>");
    branded.assert_contains("src=\"https://acme.example/logo.png\"");
    branded.assert_contains("href=\"/portal/theme.css\"");
    let theme = browser.get("/portal/theme.css").await;
    assert_eq!(theme.status, 200);
    assert_eq!(
        theme.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    assert!(theme.body.contains("--accent: #aa3300;"), "{}", theme.body);
    // Every portal page carries it, the forms too.
    let form = browser.get("/portal/tokens/new").await;
    form.assert_contains("<span>Acme &lt;Tools&gt;</span>");
    // The CSP lets the logo load and nothing inline run.
    let csp = branded.header("content-security-policy").expect("csp");
    assert!(csp.contains("img-src 'self' https:"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
}

async fn portal_branding_is_set_and_read_over_grpc_within_the_callers_rights_and_tenants(
    backend: Backend,
) {
    let app = spawn_console(backend).await;
    let mut client = app.admin_client().await;
    let unset = client
        .get_portal_branding(app.admin(proto::GetPortalBrandingRequest {
            tenant: "acme".to_owned(),
        }))
        .await
        .expect("branding read")
        .into_inner()
        .branding
        .expect("branding");
    assert_eq!(unset.tenant, "acme");
    assert!(unset.product_name.is_empty() && unset.logo_url.is_empty());
    assert!(unset.accent_color.is_empty() && unset.update_time.is_none());

    let branding = proto::PortalBranding {
        tenant: "acme".to_owned(),
        product_name: " Acme ".to_owned(),
        logo_url: "https://acme.example/logo.svg".to_owned(),
        accent_color: "#00AA55".to_owned(),
        update_time: None,
    };
    let set = client
        .set_portal_branding(app.admin(proto::SetPortalBrandingRequest {
            branding: Some(branding.clone()),
        }))
        .await
        .expect("branding set")
        .into_inner()
        .branding
        .expect("branding");
    assert_eq!(set.product_name, "Acme");
    assert_eq!(set.accent_color, "#00aa55");
    assert!(set.update_time.is_some());
    let read = client
        .get_portal_branding(app.admin(proto::GetPortalBrandingRequest {
            tenant: "acme".to_owned(),
        }))
        .await
        .expect("branding read")
        .into_inner()
        .branding
        .expect("branding");
    assert_eq!(read, set);
    // Another tenant keeps Tessera's look.
    let other = client
        .get_portal_branding(app.admin(proto::GetPortalBrandingRequest::default()))
        .await
        .expect("branding read")
        .into_inner()
        .branding
        .expect("branding");
    assert!(other.product_name.is_empty(), "{other:?}");

    let invalid = client
        .set_portal_branding(app.admin(proto::SetPortalBrandingRequest {
            branding: Some(proto::PortalBranding {
                tenant: "acme".to_owned(),
                product_name: "n".repeat(65),
                logo_url: "http://acme.example/logo.png".to_owned(),
                accent_color: "red".to_owned(),
                update_time: None,
            }),
        }))
        .await
        .expect_err("invalid branding");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument, "{invalid:?}");
    let fields: Vec<String> = invalid
        .get_details_bad_request()
        .expect("field violations")
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    assert_eq!(
        fields,
        [
            "branding.product_name",
            "branding.logo_url",
            "branding.accent_color"
        ]
    );

    // Reading takes any role; setting takes an owner, in its own tenants.
    let mut keys = Vec::new();
    for (role, tenants) in [
        (proto::AdminRole::Viewer, vec![]),
        (proto::AdminRole::TokenManager, vec![]),
        (proto::AdminRole::Owner, vec!["acme".to_owned()]),
    ] {
        let created = client
            .create_admin_key(app.admin(proto::CreateAdminKeyRequest {
                name: format!("{role:?}"),
                role: role as i32,
                tenants,
                ..Default::default()
            }))
            .await
            .expect("admin key")
            .into_inner();
        keys.push(created.secret);
    }
    let set_with = |key: &str, tenant: &str| {
        let mut branding = branding.clone();
        branding.tenant = tenant.to_owned();
        with_key(
            proto::SetPortalBrandingRequest {
                branding: Some(branding),
            },
            key,
        )
    };
    for key in &keys[..2] {
        let read = client
            .get_portal_branding(with_key(
                proto::GetPortalBrandingRequest {
                    tenant: "acme".to_owned(),
                },
                key,
            ))
            .await
            .expect("any role reads");
        assert_eq!(
            read.into_inner().branding.expect("branding").product_name,
            "Acme"
        );
        let refused = client
            .set_portal_branding(set_with(key.as_str(), "acme"))
            .await
            .expect_err("not an owner");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    }
    client
        .set_portal_branding(set_with(&keys[2], "acme"))
        .await
        .expect("an owner of acme sets acme's");
    let elsewhere = client
        .set_portal_branding(set_with(&keys[2], "globex"))
        .await
        .expect_err("not its tenant");
    assert_eq!(
        elsewhere.code(),
        tonic::Code::PermissionDenied,
        "{elsewhere:?}"
    );
    let unseen = client
        .get_portal_branding(with_key(
            proto::GetPortalBrandingRequest {
                tenant: "globex".to_owned(),
            },
            &keys[2],
        ))
        .await
        .expect_err("not its tenant");
    assert_eq!(unseen.code(), tonic::Code::PermissionDenied, "{unseen:?}");

    let audit = client
        .list_audit_events(app.admin(proto::ListAuditEventsRequest::default()))
        .await
        .expect("audit")
        .into_inner();
    let sets = audit
        .events
        .iter()
        .filter(|event| event.action == "portal_branding.set")
        .count();
    assert_eq!(sets, 2, "{:?}", audit.events);
}

async fn a_portal_session_stays_in_its_tenant_even_for_a_principal_of_the_same_id_elsewhere(
    backend: Backend,
) {
    let app = spawn_console(backend).await;
    app.principal("", "alice", &["orders:*", "users:*"]).await;
    app.principal("acme", "alice", &["orders:*"]).await;
    let (home, _) = token_of(&app, "alice", "home token", &["users:read"]).await;
    let mut request = new_token("acme", "alice", &["orders:read"]);
    request.name = "acme token".to_owned();
    let (acme, _) = app.token(request).await;

    let mut browser = portal_in(&app, "acme", "alice").await;
    let list = browser.get("/portal/").await;
    assert_eq!(list.status, 200, "{}", list.body);
    list.assert_contains("acme token");
    assert!(!list.body.contains("home token"), "{}", list.body);
    assert_eq!(
        browser
            .get(&format!("/portal/tokens/{}", acme.id))
            .await
            .status,
        200
    );
    for suffix in ["", "/edit", "/rotate", "/revoke", "/usage"] {
        let page = browser.get(&format!("/portal/tokens/{home}{suffix}")).await;
        assert_eq!(page.status, 404, "{suffix}: {}", page.body);
    }
    // The acme principal's permissions are offered, not the other alice's.
    let form = browser.get("/portal/tokens/new").await;
    form.assert_contains("value=\"orders:*\"");
    assert!(!form.body.contains("users:*"), "{}", form.body);
    let csrf = form.csrf();
    let created = browser
        .post(
            "/portal/tokens",
            &[
                ("csrf", &csrf),
                ("name", "made here"),
                ("permissions", "orders:*"),
            ],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let made = app
        .admin_client()
        .await
        .list_tokens(app.admin(proto::ListTokensRequest {
            tenant: "acme".to_owned(),
            owner_id: "alice".to_owned(),
            ..Default::default()
        }))
        .await
        .expect("tokens")
        .into_inner()
        .tokens;
    assert!(
        made.iter().any(|token| token.name == "made here"),
        "{made:?}"
    );
    assert_eq!(
        tokens_of(&app, "alice").await.len(),
        1,
        "the default tenant's alice got nothing"
    );
}

/// The `href` of the link reading `label` on the page (HTML entities undone).
fn link(page: &Page, label: &str) -> String {
    let end = page
        .body
        .find(&format!("\">{label}</a>"))
        .unwrap_or_else(|| panic!("no {label:?} link: {}", page.body));
    let start = page.body[..end].rfind("href=\"").expect("href") + "href=\"".len();
    page.body[start..end].replace("&amp;", "&")
}

async fn the_token_list_pages_by_fifty(backend: Backend) {
    let app = spawn_console(backend).await;
    app.principal("", "alice", &["orders:*"]).await;
    for index in 0..52 {
        token_of(
            &app,
            "alice",
            &format!("token {index:02}"),
            &["orders:read"],
        )
        .await;
    }
    let mut browser = portal_of(&app, "alice").await;
    let first = browser.get("/portal/").await;
    assert_eq!(first.status, 200, "{}", first.body);
    first.assert_contains("token 00");
    first.assert_contains("token 49");
    assert!(!first.body.contains("token 50"), "{}", first.body);
    let second = browser.get(&link(&first, "Next page")).await;
    assert_eq!(second.status, 200, "{}", second.body);
    second.assert_contains("token 50");
    second.assert_contains("token 51");
    assert!(!second.body.contains("token 00"), "{}", second.body);
    assert!(!second.body.contains(">Next page<"), "{}", second.body);
    assert_eq!(link(&second, "First page"), "/portal/");
}

async fn what_a_caller_wrote_is_escaped_on_every_portal_page(backend: Backend) {
    let app = spawn_console(backend).await;
    app.principal("", "alice", &["orders:*"]).await;
    let name = "<script>alert(1)</script>\" data-x=\"";
    let mut request = new_token("", "alice", &["orders:read"]);
    request.name = name.to_owned();
    request.description = "<img src=x onerror=alert(2)>".to_owned();
    let (token, _) = app.token(request).await;
    let mut browser = portal_of(&app, "alice").await;
    for path in [
        "/portal/".to_owned(),
        format!("/portal/tokens/{}", token.id),
        format!("/portal/tokens/{}/edit", token.id),
        format!("/portal/tokens/{}/rotate", token.id),
        format!("/portal/tokens/{}/revoke", token.id),
        format!("/portal/tokens/{}/usage", token.id),
    ] {
        let page = browser.get(&path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(
            !page.body.contains("<script>alert"),
            "{path}: {}",
            page.body
        );
        assert!(!page.body.contains("<img src=x"), "{path}: {}", page.body);
        assert!(!page.body.contains("\" data-x=\""), "{path}: {}", page.body);
        page.assert_contains("&lt;script&gt;alert(1)&lt;/script&gt;");
    }
    // The typed confirmation still compares the name as it is.
    let path = format!("/portal/tokens/{}/revoke", token.id);
    let csrf = csrf_at(&mut browser, &path).await;
    let revoked = browser
        .post(&path, &[("csrf", &csrf), ("confirm", name)])
        .await;
    assert_eq!(revoked.status, 303, "{}", revoked.body);
}
