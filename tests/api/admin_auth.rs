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
