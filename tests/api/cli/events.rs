//! `tessera events watch`, through the real binary: JSON lines from a cursor.

use tessera::proto;
use tokio_stream::StreamExt;

use super::admin;

#[tokio::test]
async fn events_watch_prints_each_event_after_the_cursor_as_a_json_line() {
    let app = super::app_with_alice().await;
    let mut stream = app
        .admin_client()
        .await
        .watch_events(app.admin(proto::WatchEventsRequest {
            tenant: "acme".to_owned(),
            event_types: vec!["token.created".to_owned()],
            ..Default::default()
        }))
        .await
        .expect("watch opened")
        .into_inner();
    let mut ids = Vec::new();
    for name in ["first", "second", "third"] {
        ids.push(super::create_token(&app, name, "orders:read").await.0);
    }
    let cursor = stream
        .next()
        .await
        .expect("an event")
        .expect("not an error")
        .event
        .expect("event")
        .id;

    let watched = admin(
        &app,
        &format!(
            "events watch --tenant acme --type token.created --after {cursor} --limit 2 --json"
        ),
    )
    .await;
    let for_people = admin(
        &app,
        &format!("events watch --tenant acme --after {cursor} --limit 1"),
    )
    .await;

    let lines: Vec<serde_json::Value> = watched
        .stdout(0)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{}", watched.stdout(0));
    assert_eq!(lines[0]["type"], "token.created");
    assert_eq!(lines[0]["data"]["token"]["id"], ids[1].as_str());
    assert_eq!(lines[1]["token_id"], ids[2].as_str());
    assert_eq!(lines[1]["data"]["token"]["rate_limit_per_minute"], 0);
    let line = for_people.stdout(0).trim_end();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("token.created"), "{line}");
    assert!(line.contains(ids[1].as_str()), "{line}");
    assert!(
        line.ends_with(lines[0]["id"].as_str().expect("id")),
        "{line}"
    );
}
