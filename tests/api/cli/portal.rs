//! `tessera portal open|branding`, through the real binary.

use super::admin;
use crate::console::{http, spawn_console};
use crate::helpers::Backend;
use crate::helpers::browser::Browser;

#[tokio::test]
async fn portal_open_prints_a_one_time_url_that_opens_the_principals_portal_once() {
    let app = spawn_console(Backend::Sqlite).await;
    app.principal("acme", "alice", &["orders:read"]).await;
    let opened = admin(&app, "portal open alice --tenant acme --ttl 10m --json").await;
    let answer = opened.json(0);
    let url = answer["url"].as_str().expect("url");
    assert!(url.contains("/portal/enter?code="), "{url}");
    assert!(
        answer["expires_at"]
            .as_str()
            .is_some_and(|at| !at.is_empty())
    );

    let mut browser = Browser::new(http(&app));
    assert_eq!(browser.get(url).await.status, 200);
    let portal = browser.get("/portal/").await;
    assert_eq!(portal.status, 200, "{}", portal.body);
    portal.assert_contains("alice");
    assert_eq!(
        Browser::new(http(&app)).get(url).await.status,
        401,
        "used once"
    );
}

#[tokio::test]
async fn portal_branding_set_then_get_shows_what_was_set_and_a_bad_colour_is_refused() {
    let app = spawn_console(Backend::Sqlite).await;
    let set = admin(
        &app,
        "portal branding set --tenant acme --product-name Acme --accent-color #AA3300",
    )
    .await;
    set.stdout(0);
    let answer = admin(&app, "portal branding get --tenant acme --json")
        .await
        .json(0);
    assert_eq!(answer["branding"]["product_name"], "Acme");
    assert_eq!(answer["branding"]["accent_color"], "#aa3300");
    let refused = admin(&app, "portal branding set --tenant acme --accent-color red").await;
    let stderr = refused.stderr(5);
    assert!(stderr.contains("branding.accent_color"), "{stderr}");
}
