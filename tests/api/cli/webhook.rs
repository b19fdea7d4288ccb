//! `tessera webhook create|list|update|delete|deliveries`, through the real binary.

use secrecy::SecretString;

use super::{admin, assert_contains};
use crate::helpers::{Backend, spawn_app_with};

#[tokio::test]
async fn a_webhook_is_created_listed_updated_and_deleted_from_the_command_line() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.master_key = Some(SecretString::from(
            "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=",
        ));
        // Loopback, where nothing listens; and no event is written in this test.
        settings.webhook_allow_private_urls = true;
    })
    .await;
    let created = admin(
        &app,
        "webhook create --tenant acme --url http://127.0.0.1:9/hook --event-type token.created,token.revoked --json",
    )
    .await
    .json(0);
    let id = created["webhook"]["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("wh_"), "{created}");
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{created}"
    );
    assert_eq!(created["webhook"]["event_types"][1], "token.revoked");

    let human = admin(
        &app,
        "webhook create --tenant acme --url http://127.0.0.1:9/other",
    )
    .await;
    assert_contains(human.stdout(0), "store it now");

    let listed = admin(&app, "webhook list --tenant acme --json")
        .await
        .json(0);
    assert_eq!(
        listed["webhooks"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    assert!(!listed.to_string().contains("whsec_"), "{listed}");

    let updated = admin(
        &app,
        &format!("webhook update {id} --disable --all-event-types --json"),
    )
    .await
    .json(0);
    assert_eq!(updated["webhook"]["disabled"], true);
    assert_eq!(updated["webhook"]["event_types"], serde_json::json!([]));

    let nothing = admin(&app, &format!("webhook update {id}")).await;
    assert_eq!(nothing.code, Some(2), "{nothing:?}");

    let refused = admin(
        &app,
        "webhook create --tenant acme --url ftp://example.com/",
    )
    .await;
    assert_eq!(refused.code, Some(5), "{refused:?}");
    assert_contains(refused.stderr(5), "url");

    let deliveries = admin(&app, &format!("webhook deliveries {id} --json"))
        .await
        .json(0);
    assert_eq!(
        deliveries["deliveries"],
        serde_json::json!([]),
        "{deliveries}"
    );

    admin(&app, &format!("webhook delete {id}")).await.stdout(0);
    let gone = admin(&app, &format!("webhook delete {id}")).await;
    assert_eq!(gone.code, Some(6), "{gone:?}");
}
