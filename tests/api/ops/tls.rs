use std::time::Duration;

use tessera::proto::authorization_service_client::AuthorizationServiceClient;
use tessera::proto::token_admin_service_client::TokenAdminServiceClient;
use tessera::proto::{CheckRequest, GetApiStatusRequest};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::ops::{ServingStatus, eventually, health_of};
use crate::helpers::process::ServeProcess;
use crate::helpers::requests::assert_reason;
use crate::helpers::tls::{Authority, Pair, TlsFiles, replace, tls_app};
use crate::helpers::{Backend, TestApp, spawn_app_with, with_key};

/// A TLS channel to `app` trusting `server_ca`, presenting `identity` if any.
async fn channel(
    app: &TestApp,
    server_ca: &Authority,
    identity: Option<&Pair>,
) -> Result<Channel, tonic::transport::Error> {
    let address = app.grpc_url.trim_start_matches("http://");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(server_ca.pem()))
        .domain_name("localhost");
    if let Some(pair) = identity {
        tls = tls.identity(Identity::from_pem(&pair.cert, &pair.key));
    }
    Channel::from_shared(format!("https://{address}"))
        .expect("url")
        .tls_config(tls)?
        .connect()
        .await
}

async fn check_over(channel: Channel) -> Result<(), tonic::Status> {
    AuthorizationServiceClient::new(channel)
        .check(CheckRequest {
            token: "tsk_malformed".to_owned(),
            ..Default::default()
        })
        .await
        .map(drop)
}

async fn admin_call_over(channel: Channel, admin_key: &str) -> Result<(), tonic::Status> {
    let request = GetApiStatusRequest {
        tenant: "*".to_owned(),
    };
    TokenAdminServiceClient::new(channel)
        .get_api_status(with_key(request, admin_key))
        .await
        .map(drop)
}

#[tokio::test]
async fn a_client_trusting_the_servers_ca_checks_over_tls() {
    let ca = Authority::new("server ca");
    let files = TlsFiles::new(&ca.server(), None);
    let app = tls_app(&files, false, false).await;

    let channel = channel(&app, &ca, None).await.expect("tls handshake");
    check_over(channel).await.expect("Check over TLS");
}

#[tokio::test]
async fn a_plaintext_client_cannot_talk_to_the_tls_listener() {
    let ca = Authority::new("server ca");
    let files = TlsFiles::new(&ca.server(), None);
    let app = tls_app(&files, false, false).await;

    let plaintext = async {
        let channel = Channel::from_shared(app.grpc_url.clone())
            .expect("url")
            .connect()
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        check_over(channel).await
    };
    let refused = tokio::time::timeout(Duration::from_secs(15), plaintext)
        .await
        .expect("fails rather than hangs");
    assert!(refused.is_err(), "plaintext must not be served");
}

#[tokio::test]
async fn admin_calls_without_a_client_certificate_are_unauthenticated_when_mtls_is_configured() {
    let server_ca = Authority::new("server ca");
    let client_ca = Authority::new("client ca");
    let files = TlsFiles::new(&server_ca.server(), Some(&client_ca));
    let app = tls_app(&files, true, false).await;

    let anonymous = channel(&app, &server_ca, None)
        .await
        .expect("a certificate is optional at the handshake");
    check_over(anonymous.clone())
        .await
        .expect("Check needs no client certificate");
    let refused = admin_call_over(anonymous, &app.admin_key)
        .await
        .expect_err("the admin key alone is not enough");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_reason(&refused, "CLIENT_CERTIFICATE_REQUIRED");
    assert!(
        refused.message().contains("client certificate"),
        "{refused:?}"
    );

    let with_certificate = channel(&app, &server_ca, Some(&client_ca.client()))
        .await
        .expect("handshake with a client certificate");
    admin_call_over(with_certificate.clone(), &app.admin_key)
        .await
        .expect("certificate and admin key are accepted");
    let wrong_key = admin_call_over(with_certificate, "tsa_not-the-admin-key-at-all")
        .await
        .expect_err("a certificate does not replace the admin key");
    assert_eq!(wrong_key.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_rejected() {
    let server_ca = Authority::new("server ca");
    let client_ca = Authority::new("client ca");
    let rogue_ca = Authority::new("rogue ca");
    let files = TlsFiles::new(&server_ca.server(), Some(&client_ca));
    let app = tls_app(&files, true, false).await;

    let attempt = async {
        let channel = channel(&app, &server_ca, Some(&rogue_ca.client()))
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        admin_call_over(channel, &app.admin_key).await
    };
    let rejected = tokio::time::timeout(Duration::from_secs(15), attempt)
        .await
        .expect("fails rather than hangs");
    assert!(rejected.is_err(), "a rogue certificate must be refused");
}

#[tokio::test]
async fn requiring_client_certificates_refuses_every_connection_without_one() {
    let server_ca = Authority::new("server ca");
    let client_ca = Authority::new("client ca");
    let files = TlsFiles::new(&server_ca.server(), Some(&client_ca));
    let app = tls_app(&files, true, true).await;

    let anonymous = async {
        let channel = channel(&app, &server_ca, None)
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        check_over(channel).await
    };
    let refused = tokio::time::timeout(Duration::from_secs(15), anonymous)
        .await
        .expect("fails rather than hangs");
    assert!(refused.is_err(), "no certificate, no call");

    let with_certificate = channel(&app, &server_ca, Some(&client_ca.client()))
        .await
        .expect("handshake with a client certificate");
    check_over(with_certificate)
        .await
        .expect("Check with a certificate");
}

#[tokio::test]
async fn a_new_certificate_on_disk_is_served_without_a_restart() {
    let old_ca = Authority::new("old ca");
    let new_ca = Authority::new("new ca");
    let files = TlsFiles::new(&old_ca.server(), None);
    let app = tls_app(&files, false, false).await;
    check_over(channel(&app, &old_ca, None).await.expect("old handshake"))
        .await
        .expect("old certificate served");

    let renewed = new_ca.server();
    replace(&files.key(), &renewed.key);
    replace(&files.cert(), &renewed.cert);

    let reloaded = eventually(Duration::from_secs(10), || async {
        match channel(&app, &new_ca, None).await {
            Ok(channel) => check_over(channel).await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(reloaded, "the renewed certificate is served");
    assert!(
        channel(&app, &old_ca, None).await.is_err(),
        "new connections no longer get the old certificate"
    );
}

#[tokio::test]
async fn the_plaintext_health_listener_answers_probes_while_grpc_requires_tls() {
    let ca = Authority::new("server ca");
    let files = TlsFiles::new(&ca.server(), None);
    let (cert, key) = (files.cert(), files.key());
    let database = crate::helpers::TestDatabase::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = crate::helpers::ops::settings_on(&database, dir.path());
    settings.tls_cert_file = Some(cert);
    settings.tls_key_file = Some(key);
    settings.health_listen = Some("127.0.0.1:0".parse().expect("address"));
    let config = tessera::config::Config::parse(settings).expect("valid settings");
    let app = tessera::app::App::build(config).await.expect("app");
    let health_url = format!("http://{}", app.health_addr().expect("health listener"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    let serving = eventually(Duration::from_secs(5), || async {
        health_of(&health_url, "").await == ServingStatus::Serving
    })
    .await;
    assert!(serving, "kubelet-style plaintext probe sees SERVING");
    let _ = stop.send(());
    server.await.expect("task").expect("clean stop");
}

#[tokio::test]
async fn sighup_makes_the_server_reload_its_certificate_at_once() {
    let old_ca = Authority::new("old ca");
    let new_ca = Authority::new("new ca");
    let files = TlsFiles::new(&old_ca.server(), None);
    let (cert, key) = (files.cert(), files.key());
    let server = ServeProcess::start(&[
        ("TESSERA_TLS_CERT_FILE", cert.to_str().expect("utf-8 path")),
        ("TESSERA_TLS_KEY_FILE", key.to_str().expect("utf-8 path")),
        // Polling alone would take an hour: only the signal can explain a reload.
        ("TESSERA_TLS_RELOAD_INTERVAL_MS", "3600000"),
    ])
    .await;
    let address = server.grpc_url.trim_start_matches("http://").to_owned();
    let connect = |ca: &Authority| {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca.pem()))
            .domain_name("localhost");
        let endpoint = Channel::from_shared(format!("https://{address}"))
            .expect("url")
            .tls_config(tls)
            .expect("tls config");
        async move { endpoint.connect().await }
    };
    let first = eventually(Duration::from_secs(10), || async {
        connect(&old_ca).await.is_ok()
    })
    .await;
    assert!(first, "the first certificate is served");

    let renewed = new_ca.server();
    replace(&files.key(), &renewed.key);
    replace(&files.cert(), &renewed.cert);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        connect(&new_ca).await.is_err(),
        "no reload without the signal"
    );

    server.signal("HUP").await;
    let reloaded = eventually(Duration::from_secs(10), || async {
        connect(&new_ca).await.is_ok()
    })
    .await;
    assert!(reloaded, "the renewed certificate is served after SIGHUP");
    let (status, log) = server.terminate().await;
    assert_eq!(status.code(), Some(0), "{log:#?}");
}

#[tokio::test]
async fn the_http_listener_answers_forward_auth_over_tls_with_the_same_certificate() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let ca = Authority::new("server ca");
    let files = TlsFiles::new(&ca.server(), None);
    let (cert, key) = (files.cert(), files.key());
    let app = spawn_app_with(Backend::Sqlite, move |settings| {
        settings.tls_cert_file = Some(cert);
        settings.tls_key_file = Some(key);
        settings.http_listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let address = app.http_addr.expect("http listener");
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("ca pem"))
        .expect("root");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // What an HTTPS gateway offers: HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    let mut tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("tls handshake with the gRPC listener's certificate");

    tls.write_all(b"GET /forward-auth HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\nx-forwarded-uri: /x\r\n\r\n")
        .await
        .expect("sends");
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.expect("reads");

    let answer = String::from_utf8_lossy(&answer);
    // No rule covers /x and the default denies it: an answer from forward-auth itself.
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("permission_denied"), "{answer}");
}
