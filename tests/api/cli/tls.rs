//! The `tessera` binary against the real server serving TLS with a test CA, and requiring client
//! certificates (mTLS).

use std::path::Path;

use super::{Outcome, Tessera, assert_contains};
use crate::helpers::TestApp;
use crate::helpers::tls::{Authority, Pair, TlsFiles, tls_app};

/// The app's URL as `https://` with `host`, the server's certificate being for `localhost`.
fn https_url(app: &TestApp, host: &str) -> String {
    let port = app.grpc_url.rsplit(':').next().expect("a port");
    format!("https://{host}:{port}")
}

/// Writes a PEM file into `dir` and returns its path as text.
fn pem_file(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("pem written");
    path.to_str().expect("utf-8 path").to_owned()
}

/// An admin call (`role list`) to `server` with the app's admin key.
fn role_list(app: &TestApp, server: &str) -> Tessera {
    Tessera::new("role list")
        .flag("--server", server)
        .flag("--admin-key", &app.admin_key)
}

/// The run's stderr never holds the admin key.
#[track_caller]
fn assert_key_not_printed(outcome: &Outcome, app: &TestApp) {
    assert!(
        !outcome.stderr.contains(&app.admin_key) && !outcome.stdout.contains(&app.admin_key),
        "{outcome:#?}"
    );
}

#[tokio::test]
async fn the_cli_verifies_an_https_server_against_the_ca_given_with_ca_cert_or_its_variable() {
    let ca = Authority::new("server ca");
    let files = TlsFiles::new(&ca.server(), None);
    let app = tls_app(&files, false, false).await;
    let ca_file = pem_file(files.dir.path(), "server-ca.pem", &ca.pem());
    let server = https_url(&app, "localhost");

    role_list(&app, &server)
        .flag("--ca-cert", &ca_file)
        .run()
        .await
        .stdout(0);
    let by_variable = role_list(&app, &server)
        .env("TESSERA_CA_CERT", &ca_file)
        .run()
        .await;
    by_variable.stdout(0);
    assert!(!by_variable.stderr.contains("warning"), "{by_variable:#?}");
}

#[tokio::test]
async fn the_cli_trusts_the_systems_ca_certificates_when_no_ca_cert_is_given() {
    let ca = Authority::new("server ca");
    let other = Authority::new("another ca");
    let files = TlsFiles::new(&ca.server(), None);
    let app = tls_app(&files, false, false).await;
    let server = https_url(&app, "localhost");
    // The system's store as rustls-native-certs reads it: SSL_CERT_FILE replaces the defaults.
    let system_with_ca = pem_file(files.dir.path(), "system.pem", &ca.pem());
    let system_without = pem_file(files.dir.path(), "other-system.pem", &other.pem());

    role_list(&app, &server)
        .env("SSL_CERT_FILE", &system_with_ca)
        .run()
        .await
        .stdout(0);
    let untrusted = role_list(&app, &server)
        .env("SSL_CERT_FILE", &system_without)
        .run()
        .await;
    assert_contains(
        untrusted.stderr(9),
        "the server's certificate is not signed by a CA this client trusts",
    );
    assert_key_not_printed(&untrusted, &app);
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_exits_9_and_says_to_pass_ca_cert() {
    let ca = Authority::new("server ca");
    let rogue = Authority::new("rogue ca");
    let files = TlsFiles::new(&ca.server(), None);
    let app = tls_app(&files, false, false).await;
    let rogue_file = pem_file(files.dir.path(), "rogue.pem", &rogue.pem());

    let outcome = role_list(&app, &https_url(&app, "localhost"))
        .flag("--ca-cert", &rogue_file)
        .run()
        .await;
    let stderr = outcome.stderr(9);
    assert_contains(stderr, "the TLS handshake with https://localhost:");
    assert_contains(stderr, "pass the CA that signed it with --ca-cert");
    // `check` needs no admin key and fails the same way.
    let check = Tessera::new("check tsk_any")
        .flag("--server", &https_url(&app, "localhost"))
        .flag("--ca-cert", &rogue_file)
        .run()
        .await;
    assert_contains(check.stderr(9), "not signed by a CA this client trusts");
}

#[tokio::test]
async fn a_server_certificate_for_another_name_exits_9_naming_the_mismatch() {
    let ca = Authority::new("server ca");
    let files = TlsFiles::new(&ca.server(), None);
    let app = tls_app(&files, false, false).await;
    let ca_file = pem_file(files.dir.path(), "server-ca.pem", &ca.pem());

    // The certificate names `localhost` only.
    let outcome = role_list(&app, &https_url(&app, "127.0.0.1"))
        .flag("--ca-cert", &ca_file)
        .run()
        .await;
    assert_contains(outcome.stderr(9), "name mismatch");
}

#[tokio::test]
async fn admin_calls_to_a_server_wanting_client_certificates_name_the_flags_and_work_with_them() {
    let server_ca = Authority::new("server ca");
    let client_ca = Authority::new("client ca");
    let files = TlsFiles::new(&server_ca.server(), Some(&client_ca));
    let app = tls_app(&files, true, false).await;
    let dir = files.dir.path();
    let ca_file = pem_file(dir, "server-ca.pem", &server_ca.pem());
    let Pair { cert, key } = client_ca.client();
    let (cert_file, key_file) = (
        pem_file(dir, "client.crt", &cert),
        pem_file(dir, "client.key", &key),
    );
    let server = https_url(&app, "localhost");

    let without = role_list(&app, &server)
        .flag("--ca-cert", &ca_file)
        .run()
        .await;
    assert_contains(
        without.stderr(3),
        "the server requires a client certificate for admin calls; pass --client-cert and \
         --client-key",
    );
    role_list(&app, &server)
        .flag("--ca-cert", &ca_file)
        .flag("--client-cert", &cert_file)
        .flag("--client-key", &key_file)
        .run()
        .await
        .stdout(0);
    role_list(&app, &server)
        .env("TESSERA_CA_CERT", &ca_file)
        .env("TESSERA_CLIENT_CERT", &cert_file)
        .env("TESSERA_CLIENT_KEY", &key_file)
        .run()
        .await
        .stdout(0);
}

#[tokio::test]
async fn a_server_requiring_client_certificates_refuses_the_handshake_without_one_with_exit_9() {
    let server_ca = Authority::new("server ca");
    let client_ca = Authority::new("client ca");
    let rogue_ca = Authority::new("rogue ca");
    let files = TlsFiles::new(&server_ca.server(), Some(&client_ca));
    let app = tls_app(&files, true, true).await;
    let dir = files.dir.path();
    let ca_file = pem_file(dir, "server-ca.pem", &server_ca.pem());
    let server = https_url(&app, "localhost");

    // The server's alert and the end of the connection race the first call: either way the
    // message says a client certificate is wanted.
    let without = role_list(&app, &server)
        .flag("--ca-cert", &ca_file)
        .run()
        .await;
    assert_contains(without.stderr(9), "client certificate");
    assert_contains(&without.stderr, "pass --client-cert and --client-key");
    assert_key_not_printed(&without, &app);

    let rogue = rogue_ca.client();
    let rejected = role_list(&app, &server)
        .flag("--ca-cert", &ca_file)
        .flag("--client-cert", &pem_file(dir, "rogue.crt", &rogue.cert))
        .flag("--client-key", &pem_file(dir, "rogue.key", &rogue.key))
        .run()
        .await;
    assert_contains(rejected.stderr(9), "client certificate");

    let good = client_ca.client();
    role_list(&app, &server)
        .flag("--ca-cert", &ca_file)
        .flag("--client-cert", &pem_file(dir, "client.crt", &good.cert))
        .flag("--client-key", &pem_file(dir, "client.key", &good.key))
        .run()
        .await
        .stdout(0);
}

#[tokio::test]
async fn tls_flags_with_an_http_server_are_a_usage_error_rather_than_ignored() {
    let outcome = Tessera::new("role list --admin-key any --ca-cert /nonexistent/ca.pem")
        .flag("--server", "http://127.0.0.1:1")
        .run()
        .await;
    assert_contains(outcome.stderr(2), "need an https:// server");
}

#[tokio::test]
async fn an_admin_key_sent_in_plaintext_off_this_machine_is_warned_about_first() {
    let app = crate::helpers::spawn_app().await;
    let local = role_list(&app, &app.grpc_url).run().await;
    local.stdout(0);
    assert!(!local.stderr.contains("warning"), "{local:#?}");

    // 0.0.0.0 is no loopback address, though Linux delivers it to this machine's listener.
    let port = app.grpc_url.rsplit(':').next().expect("a port");
    let unspecified = role_list(&app, &format!("http://0.0.0.0:{port}"))
        .run()
        .await;
    assert_contains(
        &unspecified.stderr,
        "warning: the admin key is sent unencrypted to 0.0.0.0",
    );
    assert_key_not_printed(&unspecified, &app);
}
