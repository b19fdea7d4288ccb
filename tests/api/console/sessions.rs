//! Console and portal sessions: sign-in with an admin key, CSRF on every form, cookies and
//! security headers, the portal's one-time URL, sign-out and revocation.

use tessera::proto;

use super::{http, spawn_console};
use crate::backend_tests;
use crate::helpers::Backend;
use crate::helpers::browser::Browser;

backend_tests!(
    an_operator_signs_in_with_an_admin_key_and_out_again,
    a_wrong_admin_key_or_a_missing_csrf_token_signs_nobody_in,
    a_console_session_ends_when_its_admin_key_is_revoked,
    a_portal_url_opens_a_session_once_and_is_dead_after,
);

#[tokio::test]
async fn sign_in_attempts_past_the_per_ip_limit_are_refused_with_retry_after() {
    let app = super::spawn_console_with(Backend::Sqlite, |settings| {
        settings.console_sign_ins_per_minute = 2;
    })
    .await;
    let mut browser = Browser::new(http(&app));
    let csrf = browser.get("/console/sign-in").await.csrf();
    for _ in 0..2 {
        let refused = browser
            .post(
                "/console/sign-in",
                &[("csrf", &csrf), ("admin_key", "tsa_wrong"), ("name", "")],
            )
            .await;
        assert_eq!(refused.status, 401, "{}", refused.body);
    }
    // Past the limit even the right key waits: guessing costs a minute per two tries.
    let limited = browser
        .post(
            "/console/sign-in",
            &[("csrf", &csrf), ("admin_key", &app.admin_key), ("name", "")],
        )
        .await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    let wait: u64 = limited
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(!browser.cookies.contains_key("tessera-console"));
}

#[tokio::test]
async fn a_form_larger_than_the_listeners_body_limit_is_refused_with_413() {
    let app = super::spawn_console_with(Backend::Sqlite, |settings| {
        settings.http_max_body_bytes = 4096;
    })
    .await;
    let mut browser = Browser::new(http(&app));
    let overview = browser.sign_in(&app.admin_key).await;
    let csrf = overview.csrf();
    let padding = "x".repeat(8192);
    let refused = browser
        .post(
            "/console/sign-out",
            &[("csrf", &csrf), ("padding", &padding)],
        )
        .await;
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert_eq!(
        browser.get("/console/").await.status,
        200,
        "still signed in"
    );
    let sign_in = browser
        .post(
            "/console/sign-in",
            &[("csrf", "x"), ("admin_key", &padding)],
        )
        .await;
    assert_eq!(sign_in.status, 413, "{}", sign_in.body);
}

#[tokio::test]
async fn only_the_portal_may_be_framed_and_only_by_the_origins_the_setting_names() {
    let app = super::spawn_console_with(Backend::Sqlite, |settings| {
        settings.portal_frame_ancestors = "https://app.example.com".to_owned();
    })
    .await;
    let mut browser = Browser::new(http(&app));
    let portal = browser.get("/portal/enter?code=nothing").await;
    let csp = portal.header("content-security-policy").expect("csp");
    assert!(
        csp.ends_with("frame-ancestors https://app.example.com"),
        "{csp}"
    );
    assert_eq!(
        portal.header("x-frame-options"),
        None,
        "X-Frame-Options cannot name an origin"
    );
    let console = browser.get("/console/sign-in").await;
    let csp = console.header("content-security-policy").expect("csp");
    assert!(csp.ends_with("frame-ancestors 'none'"), "{csp}");
    assert_eq!(console.header("x-frame-options"), Some("DENY"));
    for asset in ["/console/assets/app.css", "/portal/assets/app.js"] {
        let answer = browser.get(asset).await;
        assert_eq!(answer.status, 200, "{asset}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    }
}

async fn an_operator_signs_in_with_an_admin_key_and_out_again(backend: Backend) {
    let app = spawn_console(backend).await;
    let mut browser = Browser::new(http(&app));
    let unsigned = browser.get("/console/").await;
    assert_eq!(unsigned.status, 303, "{}", unsigned.body);
    assert_eq!(unsigned.location(), Some("/console/sign-in"));

    let overview = browser.sign_in(&app.admin_key).await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    overview.assert_contains("Role: <strong>owner</strong>");
    let cookie = browser
        .cookies
        .get("tessera-console")
        .expect("session cookie")
        .clone();
    assert!(
        !overview.body.contains(cookie.as_str()),
        "the cookie is never in a page"
    );
    let csp = overview.header("content-security-policy").expect("csp");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(overview.header("x-frame-options"), Some("DENY"));
    assert_eq!(overview.header("cache-control"), Some("no-store"));

    // The sign-in was audited, with the key that signed in.
    let audit = app
        .admin_client()
        .await
        .list_audit_events(app.admin(proto::ListAuditEventsRequest::default()))
        .await
        .expect("audit")
        .into_inner();
    assert!(
        audit
            .events
            .iter()
            .any(|event| event.action == "console.sign_in"),
        "{:?}",
        audit.events
    );

    let csrf = overview.csrf();
    let out = browser.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303, "{}", out.body);
    assert!(!browser.cookies.contains_key("tessera-console"));
    // The old cookie is dead on the server too, not only forgotten by the browser.
    browser.cookies.insert("tessera-console".to_owned(), cookie);
    let after = browser.get("/console/").await;
    assert_eq!(after.status, 303, "{}", after.body);
}

async fn a_wrong_admin_key_or_a_missing_csrf_token_signs_nobody_in(backend: Backend) {
    let app = spawn_console(backend).await;
    let mut browser = Browser::new(http(&app));
    let form = browser.get("/console/sign-in").await;
    let csrf = form.csrf();
    let wrong = browser
        .post(
            "/console/sign-in",
            &[("csrf", &csrf), ("admin_key", "tsa_wrong"), ("name", "")],
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    wrong.assert_contains("That admin key was not accepted.");
    assert!(
        !wrong.body.contains("tsa_wrong"),
        "the key typed is not echoed"
    );

    let forged = browser
        .post(
            "/console/sign-in",
            &[
                ("csrf", "forged"),
                ("admin_key", &app.admin_key),
                ("name", ""),
            ],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(!browser.cookies.contains_key("tessera-console"));

    // Signed in, a form without its token changes nothing.
    let overview = browser.sign_in(&app.admin_key).await;
    assert_eq!(overview.status, 200);
    let refused = browser.post("/console/sign-out", &[("csrf", "x")]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(
        browser.get("/console/").await.status,
        200,
        "still signed in"
    );
}

async fn a_console_session_ends_when_its_admin_key_is_revoked(backend: Backend) {
    let app = spawn_console(backend).await;
    let created = app
        .admin_client()
        .await
        .create_admin_key(app.admin(proto::CreateAdminKeyRequest {
            name: "operator".to_owned(),
            role: proto::AdminRole::Viewer as i32,
            ..Default::default()
        }))
        .await
        .expect("admin key")
        .into_inner();
    let key = created.admin_key.expect("key");
    let mut browser = Browser::new(http(&app));
    let overview = browser.sign_in(&created.secret).await;
    overview.assert_contains("Role: <strong>viewer</strong>");
    app.admin_client()
        .await
        .revoke_admin_key(app.admin(proto::RevokeAdminKeyRequest { id: key.id }))
        .await
        .expect("revoked");
    let after = browser.get("/console/").await;
    assert_eq!(after.status, 303, "{}", after.body);
    assert_eq!(after.location(), Some("/console/sign-in"));
}

async fn a_portal_url_opens_a_session_once_and_is_dead_after(backend: Backend) {
    let app = spawn_console(backend).await;
    app.principal("", "alice", &["orders:*"]).await;
    let opened = super::open_portal(&app, "", "alice").await;
    assert!(
        opened
            .url
            .starts_with(&format!("http://{}/portal/enter?code=", http(&app))),
        "{}",
        opened.url
    );
    let mut browser = Browser::new(http(&app));
    let entered = browser.get(&opened.url).await;
    assert_eq!(entered.status, 200, "{}", entered.body);
    entered.assert_contains("http-equiv=\"refresh\"");
    assert!(browser.cookies.contains_key("tessera-portal"));
    let portal = browser.get("/portal/").await;
    assert_eq!(portal.status, 200, "{}", portal.body);
    portal.assert_contains("alice");

    let mut second = Browser::new(http(&app));
    let again = second.get(&opened.url).await;
    assert_eq!(again.status, 401, "{}", again.body);
    assert!(!second.cookies.contains_key("tessera-portal"));

    // Disabling the principal ends its portal at once; enabling it again brings it back.
    let disable = |disabled: bool| proto::UpdatePrincipalRequest {
        id: "alice".to_owned(),
        disabled,
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["disabled".to_owned()],
        }),
        ..Default::default()
    };
    let mut admin = app.admin_client().await;
    admin
        .update_principal(app.admin(disable(true)))
        .await
        .expect("disabled");
    assert_eq!(browser.get("/portal/").await.status, 401);
    admin
        .update_principal(app.admin(disable(false)))
        .await
        .expect("enabled");
    assert_eq!(browser.get("/portal/").await.status, 200);

    // A portal cookie is not a console session.
    let mut console = Browser::new(http(&app));
    console.cookies = browser.cookies.clone();
    console.cookies.insert(
        "tessera-console".to_owned(),
        browser.cookies["tessera-portal"].clone(),
    );
    assert_eq!(console.get("/console/").await.status, 303);

    // A principal that does not exist gets no session.
    let missing = app
        .admin_client()
        .await
        .create_portal_session(app.admin(proto::CreatePortalSessionRequest {
            principal_id: "nobody".to_owned(),
            ..Default::default()
        }))
        .await
        .expect_err("no such principal");
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    let bad_ttl = app
        .admin_client()
        .await
        .create_portal_session(app.admin(proto::CreatePortalSessionRequest {
            principal_id: "alice".to_owned(),
            ttl: Some(prost_types::Duration {
                seconds: 7200,
                nanos: 0,
            }),
            return_url: "javascript:alert(1)".to_owned(),
            ..Default::default()
        }))
        .await
        .expect_err("bad fields");
    assert_eq!(bad_ttl.code(), tonic::Code::InvalidArgument);
    assert!(bad_ttl.message().contains("ttl") || format!("{bad_ttl:?}").contains("ttl"));
    assert!(format!("{bad_ttl:?}").contains("return_url"), "{bad_ttl:?}");
}
