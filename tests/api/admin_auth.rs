//! Admin authentication: admin keys by hash, never API tokens, bootstrap on first start.

use tessera::proto;
use tonic::Code;

use crate::helpers::{Backend, new_token, spawn_app, spawn_app_with, with_key};

const CONFIGURED_KEY: &str = "configured-admin-key-0123456789";

#[tokio::test]
async fn an_admin_call_without_a_key_is_unauthenticated() {
    let app = spawn_app().await;
    let status = app
        .admin_client()
        .await
        .list_roles(proto::ListRolesRequest::default())
        .await
        .expect_err("no key");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_wrong_admin_key_is_unauthenticated() {
    let app = spawn_app().await;
    let status = app
        .admin_client()
        .await
        .list_roles(with_key(
            proto::ListRolesRequest::default(),
            "tsa_not-the-key",
        ))
        .await
        .expect_err("wrong key");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_api_token_is_never_an_admin_key_and_an_admin_key_is_never_a_token() {
    let app = spawn_app().await;
    app.principal("acme", "alice", &["*"]).await;
    let (_, secret) = app.token(new_token("acme", "alice", &["*"])).await;
    let status = app
        .admin_client()
        .await
        .list_roles(with_key(proto::ListRolesRequest::default(), &secret))
        .await
        .expect_err("api token as admin key");
    assert_eq!(status.code(), Code::Unauthenticated);

    let response = app
        .check(proto::CheckRequest {
            token: app.admin_key.clone(),
            tenant: "acme".to_owned(),
            ..Default::default()
        })
        .await;
    assert!(!response.allowed);
    assert_eq!(response.reason(), proto::DenyReason::TokenMalformed);
}

#[tokio::test]
async fn the_bootstrap_key_is_written_once_with_owner_only_permissions() {
    let app = spawn_app().await;
    let path = app.dir.path().join("tessera-admin.key");
    assert!(app.admin_key.starts_with("tsa_"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    app.admin_client()
        .await
        .list_roles(app.admin(proto::ListRolesRequest::default()))
        .await
        .expect("the bootstrap key works");
}

#[tokio::test]
async fn configured_admin_keys_work_and_suppress_the_bootstrap() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.admin_keys = vec![CONFIGURED_KEY.to_owned().into()];
    })
    .await;
    assert!(
        app.admin_key.is_empty(),
        "no bootstrap key when keys are configured"
    );
    assert!(!app.dir.path().join("tessera-admin.key").exists());
    app.admin_client()
        .await
        .list_roles(with_key(proto::ListRolesRequest::default(), CONFIGURED_KEY))
        .await
        .expect("the configured key works");
}

#[tokio::test]
async fn replicas_starting_together_on_a_fresh_database_create_exactly_one_bootstrap_key() {
    const REPLICAS: usize = 3;
    let database = crate::helpers::TestDatabase::postgres().await;
    // Migrated first, as by an earlier deploy's job: the replicas' starts are then not spaced
    // out by the migration lock, and all reach the bootstrap together.
    tessera::store::connect(database.url(), &tessera::store::PoolOptions::default())
        .await
        .expect("migrated");
    // A directory per replica, as on separate hosts: each writes a key file only if it won.
    let dirs: Vec<tempfile::TempDir> = (0..REPLICAS)
        .map(|_| tempfile::tempdir().expect("dir"))
        .collect();
    let builds = dirs.iter().map(|dir| {
        let settings = crate::helpers::ops::settings_on(&database, dir.path());
        tessera::app::App::build(tessera::config::Config::parse(settings).expect("valid settings"))
    });
    let apps: Vec<tessera::app::App> = futures_join_all(builds).await;

    let created: Vec<&std::path::Path> = apps
        .iter()
        .filter_map(|app| app.bootstrap_key_path())
        .collect();
    assert_eq!(created.len(), 1, "one replica reports creating the key");
    let files = dirs
        .iter()
        .filter(|dir| dir.path().join("tessera-admin.key").exists())
        .count();
    assert_eq!(files, 1, "one key file among all replicas");
    assert_eq!(
        apps[0].store().count_admin_keys().await.expect("count"),
        1,
        "one admin key row"
    );
    // The winner's key works on every replica, and each lists that one key.
    let key = std::fs::read_to_string(created[0]).expect("key file");
    let key = key.trim().to_owned();
    let addresses: Vec<std::net::SocketAddr> = apps.iter().map(|app| app.local_addr()).collect();
    for app in apps {
        // Served until the test's runtime ends.
        tokio::spawn(app.run_until_stopped(std::future::pending()));
    }
    for address in addresses {
        let keys = tessera::proto::token_admin_service_client::TokenAdminServiceClient::connect(
            format!("http://{address}"),
        )
        .await
        .expect("connects")
        .list_admin_keys(with_key(proto::ListAdminKeysRequest::default(), &key))
        .await
        .expect("the bootstrap key works here")
        .into_inner()
        .admin_keys;
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_eq!(keys[0].created_by, "bootstrap");
    }
}

/// Awaits every future concurrently, in order.
async fn futures_join_all<F>(builds: impl Iterator<Item = F>) -> Vec<tessera::app::App>
where
    F: std::future::Future<Output = Result<tessera::app::App, tessera::app::AppError>>
        + Send
        + 'static,
{
    let handles: Vec<_> = builds.map(tokio::spawn).collect();
    let mut apps = Vec::new();
    for handle in handles {
        apps.push(handle.await.expect("build task").expect("app builds"));
    }
    apps
}

#[cfg(unix)]
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn the_bootstrap_key_file_is_0600_even_over_an_existing_world_readable_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("stale.key");
    std::fs::write(&path, "tsa_a_key_of_another_database\n").expect("stale file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let key_path = path.clone();
    let app = spawn_app_with(Backend::Sqlite, move |settings| {
        settings.admin_key_file = Some(key_path);
    })
    .await;

    assert_eq!(mode_of(&path), 0o600);
    let written = std::fs::read_to_string(&path).expect("key file");
    assert_eq!(written.trim(), app.admin_key);
    assert_ne!(written.trim(), "tsa_a_key_of_another_database");
    app.admin_client()
        .await
        .list_roles(app.admin(proto::ListRolesRequest::default()))
        .await
        .expect("the new key works");
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_at_the_bootstrap_key_path_is_replaced_and_its_target_left_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let target = dir.path().join("elsewhere.txt");
    std::fs::write(&target, "not yours\n").expect("target");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let path = dir.path().join("tessera-admin.key");
    std::os::unix::fs::symlink(&target, &path).expect("symlink");

    let key_path = path.clone();
    let app = spawn_app_with(Backend::Sqlite, move |settings| {
        settings.admin_key_file = Some(key_path);
    })
    .await;

    assert_eq!(
        std::fs::read_to_string(&target).expect("target"),
        "not yours\n"
    );
    assert_eq!(mode_of(&target), 0o644, "the target's mode is untouched");
    assert!(
        !std::fs::symlink_metadata(&path)
            .expect("metadata")
            .file_type()
            .is_symlink(),
        "the link itself was replaced"
    );
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(
        std::fs::read_to_string(&path).expect("key file").trim(),
        app.admin_key
    );
}

#[tokio::test]
async fn an_audit_event_records_both_the_claimed_actor_and_the_admin_key_that_acted() {
    let app = crate::helpers::spawn_app_on(Backend::Postgres).await;
    app.principal("acme", "alice", &["orders:read"]).await;
    let (token, _) = app
        .token(new_token("acme", "alice", &["orders:read"]))
        .await;
    let mut request = app.admin(proto::UpdateTokenRequest {
        id: token.id.clone(),
        name: "renamed".to_owned(),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".to_owned()],
        }),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "x-tessera-actor",
        "mallory@example.com".parse().expect("ascii"),
    );
    app.admin_client()
        .await
        .update_token(request)
        .await
        .expect("updated");

    let events = crate::helpers::requests::all_audit_events(&app).await;
    let update = events
        .iter()
        .find(|event| event.action == "token.update")
        .expect("the update's event");
    let key_id = app.bootstrap_key_id().await;
    assert_eq!(update.actor, "mallory@example.com");
    assert_eq!(update.admin_key, key_id);
    let create = events
        .iter()
        .find(|event| event.action == "token.create")
        .expect("the create's event");
    assert_eq!(create.actor, key_id, "no claim: the key is the actor");
    assert_eq!(create.admin_key, key_id);
}

#[tokio::test]
async fn an_actor_header_with_a_tab_is_refused_naming_the_header() {
    let app = spawn_app().await;
    let mut request = app.admin(proto::ListRolesRequest::default());
    request
        .metadata_mut()
        .insert("x-tessera-actor", "alice\tadmin".parse().expect("ascii"));
    let status = app
        .admin_client()
        .await
        .list_roles(request)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

#[tokio::test]
async fn repeated_bad_admin_keys_are_refused_without_a_store_lookup_each_and_counted() {
    let app = spawn_app().await;
    // Well-formed, so it is looked up (once); a malformed one is never looked up at all.
    let bad_key = crate::helpers::keys::random_key("tsa");
    let before = crate::helpers::ops::scrape(app.metrics_addr).await;
    let mut client = app.admin_client().await;
    for _ in 0..50 {
        let status = client
            .list_roles(with_key(proto::ListRolesRequest::default(), &bad_key))
            .await
            .expect_err("a bad key");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let after = crate::helpers::ops::scrape(app.metrics_addr).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        crate::helpers::ops::metric(&after, name, labels)
            - crate::helpers::ops::metric(&before, name, labels)
    };
    // The recorder is process-wide: other tests' bad keys may add a few lookups meanwhile.
    let lookups = delta("tessera_admin_key_lookups_total", &[]);
    assert!(
        (1.0..=10.0).contains(&lookups),
        "{lookups} lookups for 50 calls with one bad key"
    );
    assert!(
        delta(
            "tessera_admin_auth_failures_total",
            &[("reason", "unknown_key")]
        ) >= 50.0,
        "{after}"
    );

    // The real key still works, and is not slowed by the refusals.
    app.admin_client()
        .await
        .list_roles(app.admin(proto::ListRolesRequest::default()))
        .await
        .expect("the bootstrap key works");
}
