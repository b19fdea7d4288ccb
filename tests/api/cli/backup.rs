//! `tessera backup FILE` and the checkpoint at shutdown: the SQLite file alone is a whole copy.

use std::path::Path;

use tessera::domain::fields::{PrincipalId, Tenant};
use tessera::store::{PoolOptions, Store, connect};

use super::{Tessera, admin, assert_contains, assert_starts_with};
use crate::helpers::ops::{ServingStatus, eventually, health_of};
use crate::helpers::process::ServeProcess;
use crate::helpers::{TestDatabase, spawn_app};

/// Opens the SQLite file at `path` as a store of its own.
async fn open_copy(path: &Path) -> std::sync::Arc<dyn Store> {
    connect(
        &format!("sqlite://{}", path.display()),
        &PoolOptions::default(),
    )
    .await
    .expect("the copy opens")
}

async fn has_principal(store: &dyn Store, id: &str) -> bool {
    let tenant = Tenant::parse("acme").expect("tenant");
    let id = PrincipalId::parse(id).expect("id");
    store.get_principal(&tenant, &id).await.is_ok()
}

#[tokio::test]
async fn backup_copies_a_running_servers_sqlite_database_and_never_overwrites_a_file() {
    let app = spawn_app().await;
    admin(
        &app,
        "principal upsert alice --tenant acme --permission orders:read",
    )
    .await
    .stdout(0);
    let dir = tempfile::tempdir().expect("dir");
    let copy = dir.path().join("copy.db");
    let copy_arg = copy.to_str().expect("utf-8 path");

    let backup = Tessera::new("backup")
        .flag("--", copy_arg)
        .env("TESSERA_DATABASE_URL", app.database.url())
        .run()
        .await;
    assert_starts_with(backup.stdout(0), "backed up sqlite://");
    // The server goes on serving, and the copy has what it had written.
    admin(&app, "principal upsert bob --tenant acme")
        .await
        .stdout(0);
    let copied = open_copy(&copy).await;
    assert!(has_principal(copied.as_ref(), "alice").await);
    assert!(
        !has_principal(copied.as_ref(), "bob").await,
        "taken before bob"
    );

    let again = Tessera::new("backup")
        .flag("--", copy_arg)
        .env("TESSERA_DATABASE_URL", app.database.url())
        .run()
        .await;
    assert_contains(again.stderr(1), "already exists");
}

#[tokio::test]
async fn backup_of_a_postgres_database_points_to_pg_dump_and_writes_nothing() {
    let database = TestDatabase::postgres().await;
    let dir = tempfile::tempdir().expect("dir");
    let copy = dir.path().join("copy.db");
    let refused = Tessera::new("backup")
        .flag("--", copy.to_str().expect("utf-8 path"))
        .env("TESSERA_DATABASE_URL", database.url())
        .run()
        .await;
    let stderr = refused.stderr(1);
    assert_contains(stderr, "pg_dump");
    assert!(!stderr.contains(database.url()), "{stderr}");
    assert!(!copy.exists());
}

#[tokio::test]
async fn after_a_clean_shutdown_the_sqlite_file_alone_holds_every_write() {
    let key = "tsa_an-operators-configured-admin-key";
    let server = ServeProcess::start(&[("TESSERA_ADMIN_KEYS", key)]).await;
    let url = server.grpc_url.clone();
    let serving = eventually(std::time::Duration::from_secs(10), || async {
        health_of(&url, "").await == ServingStatus::Serving
    })
    .await;
    assert!(serving, "the server reached its database");
    Tessera::new("principal upsert alice --tenant acme --permission orders:read")
        .flag("--server", &server.grpc_url)
        .flag("--admin-key", key)
        .run()
        .await
        .stdout(0);
    let (status, log, dir) = server.terminate_keeping_dir().await;
    assert_eq!(status.code(), Some(0), "{log:#?}");

    // What an operator copying `tessera.db` alone would get.
    let elsewhere = tempfile::tempdir().expect("dir");
    let copy = elsewhere.path().join("tessera.db");
    std::fs::copy(dir.path().join("tessera.db"), &copy).expect("copied");
    let copied = open_copy(&copy).await;
    assert!(has_principal(copied.as_ref(), "alice").await, "{log:#?}");
}
