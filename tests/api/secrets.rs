//! Secrets stay secret. A complete run of the real `tessera serve` binary at debug level (tokens
//! created, rotated with and without grace, revoked; signing keys; signed and Envoy Checks;
//! failing calls; the CLI), then every secret it showed is searched for, as raw text, hex,
//! base64 and any long piece of it, in the whole log, every error, every output that did not
//! issue it, the Debug output of the types holding secrets, and every column of every table.
//! (That admin keys and API tokens never stand in for each other is `key_separation.rs`; that a
//! tenant's token is never accepted for another tenant, `tenant_isolation.rs`.)

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient as EnvoyClient;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row, SqliteConnection};
use tessera::config::Settings;
use tessera::proto;
use tessera::proto::DenyReason;
use tessera::proto::authorization_service_client::AuthorizationServiceClient;
use tessera::proto::token_admin_service_client::TokenAdminServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::backend_tests;
use crate::helpers::keys::{random_key, random_master_key};
use crate::helpers::ops::{ServingStatus, eventually, health_of};
use crate::helpers::process::{ServeProcess, serve_output};
use crate::helpers::requests::{check_request, envoy_http_status, envoy_request, sign, signature};
use crate::helpers::{Backend, TestDatabase, new_token, with_key};

const TENANT: &str = "acme";
const OTHER_TENANT: &str = "globex";
const CLIENT_IP: &str = "10.1.2.3";
/// A piece of a secret at least this long counts as the secret.
const WINDOW: usize = 12;
/// Windows start every STRIDE characters, so any WINDOW + STRIDE - 1 characters hold one.
const STRIDE: usize = 3;

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A secret and every text that would reveal it.
struct Known {
    label: String,
    value: String,
    forms: Vec<String>,
}

/// Every secret a run created or was configured with.
#[derive(Default)]
struct Secrets {
    known: Vec<Known>,
}

/// The whole value, its body without the `xxx_` prefix, overlapping windows of the body, and
/// hex and base64 of value and body (base64 at each of the three alignments it could have inside
/// a larger encoded blob, without the edge groups that mix in neighbouring bytes).
fn forms_of(value: &str) -> Vec<String> {
    let body = value
        .split_once('_')
        .filter(|(prefix, body)| (1..=16).contains(&prefix.len()) && body.len() >= WINDOW)
        .map_or(value, |(_, body)| body);
    let mut forms = vec![value.to_owned(), body.to_owned()];
    if body.is_ascii() && body.len() > WINDOW {
        let last = body.len() - WINDOW;
        let starts = (0..=last).step_by(STRIDE).chain([last]);
        forms.extend(starts.map(|start| body[start..start + WINDOW].to_owned()));
    }
    for text in [value, body] {
        forms.push(hex::encode(text));
        forms.push(hex::encode_upper(text));
        for alignment in 0..3 {
            let shifted = format!("{}{text}", "#".repeat(alignment));
            for encoded in [STANDARD.encode(&shifted), URL_SAFE.encode(&shifted)] {
                if encoded.len() > 8 + WINDOW {
                    forms.push(encoded[4..encoded.len() - 4].to_owned());
                }
            }
        }
    }
    forms.retain(|form| form.len() >= WINDOW);
    forms.sort();
    forms.dedup();
    forms
}

impl Secrets {
    fn add(&mut self, label: &str, value: &str) {
        assert!(value.len() >= WINDOW, "{label} is too short to be a secret");
        self.known.push(Known {
            label: label.to_owned(),
            value: value.to_owned(),
            forms: forms_of(value),
        });
    }

    /// Key material known as bytes (the master key's): its hex forms.
    fn add_bytes(&mut self, label: &str, bytes: &[u8]) {
        self.known.push(Known {
            label: label.to_owned(),
            value: hex::encode(bytes),
            forms: vec![hex::encode(bytes), hex::encode_upper(bytes)],
        });
    }

    /// The secrets (but those in `allowed`) that `text` reveals, each with the form found.
    fn revealed_in(&self, text: &str, allowed: &[String]) -> Vec<String> {
        self.known
            .iter()
            .filter(|known| !allowed.contains(&known.value))
            .filter_map(|known| {
                let form = known
                    .forms
                    .iter()
                    .find(|form| text.contains(form.as_str()))?;
                Some(format!("{} (as {form:?})", known.label))
            })
            .collect()
    }

    #[track_caller]
    fn assert_absent(&self, place: &str, text: &str, allowed: &[String]) {
        let revealed = self.revealed_in(text, allowed);
        assert!(
            revealed.is_empty(),
            "{place} reveals {revealed:?}; the text:\n{text}"
        );
    }
}

/// Something the run saw and the secrets it may show: those it issued, nothing else.
struct Seen {
    place: String,
    text: String,
    allowed: Vec<String>,
}

/// One complete run against a `tessera serve` process: its clients, its secrets, what it showed.
struct Run {
    url: String,
    /// The HTTP listener (the console and portal), when the run has one.
    http: Option<std::net::SocketAddr>,
    admin_key: String,
    channel: Channel,
    secrets: Secrets,
    seen: Vec<Seen>,
    token_ids: Vec<String>,
}

/// A Check as the run's client sends it: from its address, with its user agent and endpoint.
fn client_check(token: &str, tenant: &str, permission: &str) -> proto::CheckRequest {
    proto::CheckRequest {
        client_ip: CLIENT_IP.to_owned(),
        user_agent: "secrets-test/1.0".to_owned(),
        endpoint: "GET /api/v1/orders".to_owned(),
        ..check_request(tenant, token, permission)
    }
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `request`, signed with `key` at `timestamp` over `POST /api/v1/orders`.
fn signed(request: proto::CheckRequest, key: &str, timestamp: i64) -> proto::CheckRequest {
    proto::CheckRequest {
        signature: Some(signature(key, timestamp, "POST /api/v1/orders")),
        ..request
    }
}

/// A Check for `orders:read` in the tenant, signed with `key` at `timestamp`.
fn signed_read(secret: &str, key: &str, timestamp: i64) -> proto::CheckRequest {
    signed(client_check(secret, TENANT, "orders:read"), key, timestamp)
}

/// What an Envoy request is signed over without a body: method, path, SHA-256 of nothing.
fn envoy_payload() -> Vec<u8> {
    format!("GET\n/api/v1/orders\n{}", sha256_hex("")).into_bytes()
}

/// The responses that show a secret, once: token, secret, signing key (empty when none).
trait ShowsSecret: std::fmt::Debug {
    fn parts(self) -> (Option<proto::Token>, String, String);
}

impl ShowsSecret for proto::CreateTokenResponse {
    fn parts(self) -> (Option<proto::Token>, String, String) {
        (self.token, self.secret, self.signing_key)
    }
}

impl ShowsSecret for proto::RotateTokenResponse {
    fn parts(self) -> (Option<proto::Token>, String, String) {
        (self.token, self.secret, self.signing_key)
    }
}

/// A token shown once: its id, secret and signing key (empty when it signs nothing).
struct Issued {
    id: String,
    secret: String,
    signing_key: String,
}

impl Run {
    async fn start(server: &ServeProcess) -> Self {
        let url = server.grpc_url.clone();
        let serving = eventually(Duration::from_secs(20), || async {
            health_of(&url, "").await == ServingStatus::Serving
        })
        .await;
        assert!(serving, "the server never became ready");
        let channel = Channel::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connects");
        Self {
            url,
            http: server.http_addr(),
            admin_key: String::new(),
            channel,
            secrets: Secrets::default(),
            seen: Vec::new(),
            token_ids: Vec::new(),
        }
    }

    fn admin(&self) -> TokenAdminServiceClient<Channel> {
        TokenAdminServiceClient::new(self.channel.clone())
    }

    fn authz(&self) -> AuthorizationServiceClient<Channel> {
        AuthorizationServiceClient::new(self.channel.clone())
    }

    fn key<T>(&self, message: T) -> tonic::Request<T> {
        with_key(message, &self.admin_key)
    }

    fn see(&mut self, place: impl Into<String>, text: impl Into<String>, allowed: &[&str]) {
        self.seen.push(Seen {
            place: place.into(),
            text: text.into(),
            allowed: allowed.iter().map(|secret| (*secret).to_owned()).collect(),
        });
    }

    /// A response that issues nothing: its whole Debug output.
    fn see_response<T: std::fmt::Debug>(&mut self, place: &str, response: &T) {
        self.see(place, format!("{response:#?}"), &[]);
    }

    /// An error: its message, its details (raw and decoded), its metadata.
    fn see_status(&mut self, place: &str, status: &Status) {
        self.see_status_quoting(place, status, &[]);
    }

    /// An error that may quote `quoted`, the caller's own input, back to it.
    fn see_status_quoting(&mut self, place: &str, status: &Status, quoted: &[&str]) {
        let text = format!(
            "{}\n{}\n{:#?}\n{:#?}",
            status.message(),
            String::from_utf8_lossy(status.details()),
            status.get_error_details(),
            status,
        );
        self.see(format!("error of {place}"), text, quoted);
    }

    async fn expect_error<T>(
        &mut self,
        place: &str,
        result: Result<tonic::Response<T>, Status>,
        code: Code,
    ) {
        let status = match result {
            Ok(_) => panic!("{place} should fail with {code:?}"),
            Err(status) => status,
        };
        assert_eq!(status.code(), code, "{place}: {status:?}");
        self.see_status(place, &status);
    }

    async fn check(&mut self, place: &str, request: proto::CheckRequest) -> proto::CheckResponse {
        let response = self
            .authz()
            .check(request)
            .await
            .unwrap_or_else(|status| panic!("{place}: {status:?}"))
            .into_inner();
        self.see_response(&format!("check: {place}"), &response);
        response
    }

    async fn expect_allowed(&mut self, place: &str, request: proto::CheckRequest) {
        let response = self.check(place, request).await;
        assert!(response.allowed, "{place}: {response:?}");
    }

    async fn expect_reason(
        &mut self,
        place: &str,
        request: proto::CheckRequest,
        reason: DenyReason,
    ) {
        let response = self.check(place, request).await;
        assert_eq!(response.reason(), reason, "{place}: {response:?}");
    }

    async fn envoy(&mut self, place: &str, tenant: &str, headers: &[(&str, &str)]) -> i32 {
        let response = EnvoyClient::new(self.channel.clone())
            .check(envoy_request(
                tenant,
                "/api/v1/orders",
                headers.iter().copied(),
            ))
            .await
            .unwrap_or_else(|status| panic!("envoy {place}: {status:?}"))
            .into_inner();
        self.see_response(&format!("envoy: {place}"), &response);
        envoy_http_status(&response)
    }

    /// Records a token's secret and signing key, after checking the response carries them.
    fn issued<R: ShowsSecret>(
        &mut self,
        label: &str,
        result: Result<tonic::Response<R>, Status>,
    ) -> Issued {
        let response = result
            .unwrap_or_else(|status| panic!("{label}: {status:?}"))
            .into_inner();
        let shown = format!("{response:?}");
        let (token, secret, signing_key) = response.parts();
        let id = token.expect("token").id;
        assert!(
            shown.contains(&secret),
            "{label}: the response shows its secret"
        );
        self.secrets.add(&format!("{label} secret"), &secret);
        if !signing_key.is_empty() {
            assert!(
                shown.contains(&signing_key),
                "{label}: the response shows its signing key"
            );
            self.secrets
                .add(&format!("{label} signing key"), &signing_key);
        }
        self.token_ids.push(id.clone());
        Issued {
            id,
            secret,
            signing_key,
        }
    }

    async fn create(&mut self, label: &str, request: proto::CreateTokenRequest) -> Issued {
        let result = self.admin().create_token(self.key(request)).await;
        self.issued(label, result)
    }

    async fn rotate(&mut self, label: &str, id: &str, grace: Option<Duration>) -> Issued {
        let request = proto::RotateTokenRequest {
            id: id.to_owned(),
            grace_period: grace.map(|grace| prost_types::Duration {
                seconds: i64::try_from(grace.as_secs()).expect("seconds"),
                nanos: 0,
            }),
        };
        let result = self.admin().rotate_token(self.key(request)).await;
        self.issued(label, result)
    }

    /// The CLI against this server, with the admin key in its environment; `issuing` says that
    /// the output shows a new secret (parsed out of it and recorded).
    /// Runs `command_line` (split at spaces), asserts its exit code, and returns stdout. With
    /// `issuing`, the output shows a new secret: it is parsed out, recorded, and allowed there.
    async fn cli(&mut self, command_line: &str, stdin: &str, issuing: bool, code: i32) -> String {
        let args: Vec<&str> = command_line.split_whitespace().collect();
        let (exit, stdout, stderr) = run_cli(&self.url, &self.admin_key, &args, stdin).await;
        assert_eq!(exit, Some(code), "{command_line}:\n{stdout}\n{stderr}");
        let mut allowed = Vec::new();
        if issuing {
            for field in ["secret", "signing_key"] {
                if let Some(value) = shown_field(&stdout, field) {
                    self.secrets
                        .add(&format!("`{command_line}` {field}"), &value);
                    allowed.push(value);
                }
            }
            assert!(
                !allowed.is_empty(),
                "{command_line} printed no secret:\n{stdout}"
            );
        }
        let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
        self.see(
            format!("stdout of `{command_line}`"),
            stdout.clone(),
            &allowed,
        );
        self.see(format!("stderr of `{command_line}`"), stderr, &[]);
        stdout
    }
}

/// `field` from the CLI's output: `"field": "…"` in JSON, `field: …` in a table.
fn shown_field(stdout: &str, field: &str) -> Option<String> {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(stdout) {
        return json[field]
            .as_str()
            .filter(|value| !value.is_empty())
            .map(str::to_owned);
    }
    let label = field.replace('_', " ");
    stdout.lines().find_map(|line| {
        let value = line
            .trim()
            .strip_prefix(label.as_str())?
            .strip_prefix(':')?
            .trim();
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// The `tessera` binary, bounded in time: exit code, stdout, stderr.
async fn run_cli(
    url: &str,
    admin_key: &str,
    args: &[&str],
    stdin: &str,
) -> (Option<i32>, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TESSERA_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(args)
        .env("TESSERA_SERVER", url)
        .env("TESSERA_ADMIN_KEY", admin_key)
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the tessera binary starts");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("stdin written");
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the cli ends within 30 s")
        .expect("output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every value of every column of every table, as text (binary columns as hex), by
/// `table.column`.
async fn every_column(database_url: &str, backend: Backend) -> Vec<(String, String)> {
    let mut columns = Vec::new();
    match backend {
        Backend::Sqlite => {
            let mut connection = SqliteConnection::connect(database_url)
                .await
                .expect("sqlite");
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
            )
            .fetch_all(&mut connection)
            .await
            .expect("tables");
            for table in tables {
                let names: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                        .bind(&table)
                        .fetch_all(&mut connection)
                        .await
                        .expect("columns");
                for column in names {
                    // quote() renders every type as text, blobs as X'…' hex.
                    let values: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                        "SELECT quote(\"{column}\") FROM \"{table}\""
                    )))
                    .fetch_all(&mut connection)
                    .await
                    .expect("values");
                    columns.push((format!("{table}.{column}"), values.join("\n")));
                }
            }
        }
        Backend::Postgres => {
            let mut connection = PgConnection::connect(database_url).await.expect("postgres");
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
            )
            .fetch_all(&mut connection)
            .await
            .expect("tables");
            for table in tables {
                let described = sqlx::query(
                    "SELECT column_name::text, data_type::text FROM information_schema.columns \
                     WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                )
                .bind(&table)
                .fetch_all(&mut connection)
                .await
                .expect("columns");
                for row in described {
                    let column: String = row.get(0);
                    let data_type: String = row.get(1);
                    let as_text = if data_type == "bytea" {
                        format!("encode(\"{column}\", 'hex')")
                    } else {
                        format!("\"{column}\"::text")
                    };
                    let values: Vec<Option<String>> = sqlx::query_scalar(AssertSqlSafe(format!(
                        "SELECT {as_text} FROM \"{table}\""
                    )))
                    .fetch_all(&mut connection)
                    .await
                    .expect("values");
                    let values: Vec<String> =
                        values.into_iter().map(Option::unwrap_or_default).collect();
                    columns.push((format!("{table}.{column}"), values.join("\n")));
                }
            }
        }
    }
    columns
}

/// `url` with `password` in its user info, when it has a user and no password yet.
fn with_password(url: &str, password: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let (user, host) = rest.split_once('@')?;
    (!user.contains(':')).then(|| format!("{scheme}://{user}:{password}@{host}"))
}

/// Everything a deployment does with secrets, through every door, on the real binary.
async fn drive(run: &mut Run) {
    // Principals and a role in two tenants.
    for (tenant, id) in [(TENANT, "alice"), (OTHER_TENANT, "alice")] {
        let response = run
            .admin()
            .upsert_principal(run.key(proto::UpsertPrincipalRequest {
                tenant: tenant.to_owned(),
                id: id.to_owned(),
                permissions: vec!["orders:*".to_owned(), "products:read".to_owned()],
                ..Default::default()
            }))
            .await
            .expect("principal");
        run.see_response("upsert principal", &response);
    }
    let response = run
        .admin()
        .upsert_role(run.key(proto::UpsertRoleRequest {
            tenant: TENANT.to_owned(),
            name: "reporting".to_owned(),
            permissions: vec!["orders:read".to_owned()],
        }))
        .await
        .expect("role");
    run.see_response("upsert role", &response);

    // Tokens: plain, and signing.
    let mut plain_request = new_token(TENANT, "alice", &["orders:write"]);
    plain_request.roles = vec!["reporting".to_owned()];
    plain_request.allowed_ips = vec!["10.0.0.0/8".to_owned()];
    let plain = run.create("plain token", plain_request).await;
    let mut signing_request = new_token(TENANT, "alice", &["orders:read"]);
    signing_request.require_signature = true;
    let signing = run.create("signing token", signing_request).await;
    assert!(signing.signing_key.starts_with("tss_"));

    // Checks: allowed, and every way of being denied, including near misses of real secrets.
    let allowed = run
        .check(
            "allowed",
            client_check(&plain.secret, TENANT, "orders:read"),
        )
        .await;
    assert!(allowed.allowed, "{allowed:?}");
    run.expect_reason(
        "beyond its grants",
        client_check(&plain.secret, TENANT, "billing:read"),
        DenyReason::PermissionDenied,
    )
    .await;
    run.expect_reason(
        "another tenant",
        client_check(&plain.secret, OTHER_TENANT, "orders:read"),
        DenyReason::TenantMismatch,
    )
    .await;
    let mut elsewhere = client_check(&plain.secret, TENANT, "orders:read");
    elsewhere.client_ip = "192.0.2.1".to_owned();
    run.expect_reason("outside its allowlist", elsewhere, DenyReason::IpNotAllowed)
        .await;
    let typo = {
        let mut chars: Vec<char> = plain.secret.chars().collect();
        let last = chars.len() - 1;
        chars[last] = if chars[last] == 'a' { 'b' } else { 'a' };
        chars.into_iter().collect::<String>()
    };
    run.expect_reason(
        "a typo",
        client_check(&typo, TENANT, "orders:read"),
        DenyReason::TokenMalformed,
    )
    .await;
    let truncated = &plain.secret[..plain.secret.len() - 1];
    run.expect_reason(
        "truncated",
        client_check(truncated, TENANT, ""),
        DenyReason::TokenMalformed,
    )
    .await;
    let reprefixed = plain.secret.replacen("tsk_", "tsx_", 1);
    run.expect_reason(
        "another prefix",
        client_check(&reprefixed, TENANT, ""),
        DenyReason::TokenMalformed,
    )
    .await;
    let unknown = random_key("tsk");
    run.secrets.add("well-formed unknown token", &unknown);
    run.expect_reason(
        "unknown",
        client_check(&unknown, TENANT, ""),
        DenyReason::TokenUnknown,
    )
    .await;
    let admin_key = run.admin_key.clone();
    run.expect_reason(
        "the admin key as a token",
        client_check(&admin_key, TENANT, ""),
        DenyReason::TokenMalformed,
    )
    .await;
    run.expect_reason(
        "a signing key as a token",
        client_check(&signing.signing_key, TENANT, ""),
        DenyReason::TokenMalformed,
    )
    .await;

    // Signed Checks: good, replayed, wrong key, stale, missing. Each signature of one key and
    // payload gets its own timestamp, so none is refused as a replay by accident.
    let now = unix_now();
    let good = signed_read(&signing.secret, &signing.signing_key, now);
    run.expect_allowed("signed", good.clone()).await;
    run.expect_reason("replayed", good, DenyReason::Replayed)
        .await;
    run.expect_reason(
        "signed with the token",
        signed_read(&signing.secret, &signing.secret, now),
        DenyReason::SignatureInvalid,
    )
    .await;
    run.expect_reason(
        "stale",
        signed_read(&signing.secret, &signing.signing_key, now - 3600),
        DenyReason::TimestampOutOfWindow,
    )
    .await;
    run.expect_reason(
        "unsigned",
        client_check(&signing.secret, TENANT, "orders:read"),
        DenyReason::SignatureRequired,
    )
    .await;

    // Envoy: bearer tokens, a signed request, near misses, the admin key.
    let bearer = format!("Bearer {}", plain.secret);
    let forwarded = [
        ("authorization", bearer.as_str()),
        ("x-forwarded-for", CLIENT_IP),
    ];
    // The source address is unset, so the allowlist denies: what counts is that it was read.
    assert_eq!(run.envoy("bearer", TENANT, &forwarded).await, 403);
    let typo_bearer = format!("Bearer {typo}");
    assert_eq!(
        run.envoy("typo", TENANT, &[("authorization", typo_bearer.as_str())])
            .await,
        401
    );
    let admin_bearer = format!("Bearer {admin_key}");
    assert_eq!(
        run.envoy(
            "admin key",
            TENANT,
            &[("authorization", admin_bearer.as_str())]
        )
        .await,
        401
    );
    let now = unix_now();
    let envoy_signature = sign(&signing.signing_key, now, &envoy_payload());
    let signing_bearer = format!("Bearer {}", signing.secret);
    let timestamp = now.to_string();
    let signed_headers = [
        ("authorization", signing_bearer.as_str()),
        ("x-tessera-signature", envoy_signature.as_str()),
        ("x-tessera-timestamp", timestamp.as_str()),
    ];
    assert_eq!(run.envoy("signed", TENANT, &signed_headers).await, 200);
    assert_eq!(
        run.envoy("signed, other tenant", OTHER_TENANT, &signed_headers)
            .await,
        401
    );

    // Usage reported, then rotation without grace: the old secret is retired at once.
    run.authz()
        .report_usage(proto::ReportUsageRequest {
            token_id: plain.id.clone(),
            endpoint: "GET /api/v1/orders".to_owned(),
            report_handle: allowed.report_handle.clone(),
            http_status: 200,
            duration: Some(prost_types::Duration {
                seconds: 0,
                nanos: 3_000_000,
            }),
            ..Default::default()
        })
        .await
        .expect("usage reported");
    let rotated = run
        .rotate("plain token after rotation", &plain.id, None)
        .await;
    run.expect_reason(
        "a secret rotated away",
        client_check(&plain.secret, TENANT, "orders:read"),
        DenyReason::TokenRevoked,
    )
    .await;
    run.expect_allowed(
        "the new secret",
        client_check(&rotated.secret, TENANT, "orders:read"),
    )
    .await;

    // Rotation with grace: old secret and old key keep working, the new pair works, crossed fails.
    let graced = run
        .rotate(
            "signing token after rotation",
            &signing.id,
            Some(Duration::from_secs(3600)),
        )
        .await;
    assert!(
        !graced.signing_key.is_empty(),
        "rotation issues a new signing key"
    );
    let now = unix_now() + 10;
    run.expect_allowed(
        "old pair in grace",
        signed_read(&signing.secret, &signing.signing_key, now),
    )
    .await;
    run.expect_allowed(
        "new pair",
        signed_read(&graced.secret, &graced.signing_key, now),
    )
    .await;
    run.expect_reason(
        "crossed pair",
        signed_read(&graced.secret, &signing.signing_key, now + 1),
        DenyReason::SignatureInvalid,
    )
    .await;

    // An update that turns signing on shows a key.
    let later = run
        .create(
            "token signed later",
            new_token(TENANT, "alice", &["orders:read"]),
        )
        .await;
    let updated = run
        .admin()
        .update_token(run.key(proto::UpdateTokenRequest {
            id: later.id.clone(),
            require_signature: true,
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["require_signature".to_owned()],
            }),
            ..Default::default()
        }))
        .await
        .expect("signing turned on")
        .into_inner();
    assert!(format!("{updated:?}").contains(&updated.signing_key));
    run.secrets
        .add("key of the token signed later", &updated.signing_key);
    run.expect_allowed(
        "signed after update",
        signed(
            client_check(&later.secret, TENANT, "orders:read"),
            &updated.signing_key,
            unix_now(),
        ),
    )
    .await;

    // Revocation.
    let revoked = run
        .admin()
        .revoke_token(run.key(proto::RevokeTokenRequest {
            id: plain.id.clone(),
        }))
        .await
        .expect("revoked");
    run.see_response("revoke", &revoked);
    run.expect_reason(
        "revoked",
        client_check(&rotated.secret, TENANT, ""),
        DenyReason::TokenRevoked,
    )
    .await;

    failing_admin_calls(run, &plain, &rotated, &graced).await;
    reads(run, &plain.id).await;
    cli_session(run, &rotated.secret).await;
    if let Some(http) = run.http {
        console_session(run, http).await;
    }
}

/// The console and the portal (src/console/): signing in with the admin key, a token created
/// from a page (its secret shown there once), a portal session's one-time code. Every page is
/// scanned; only the page that issues a secret may show it, and the log never.
async fn console_session(run: &mut Run, http: std::net::SocketAddr) {
    use crate::helpers::browser::Browser;

    let mut browser = Browser::new(http);
    let admin_key = run.admin_key.clone();
    let overview = browser.sign_in(&admin_key).await;
    run.see("console overview", overview.body.clone(), &[]);
    let wrong = browser.get("/console/sign-in").await;
    let csrf = wrong.csrf();
    // The admin key pasted with a typo: refused, and not echoed.
    let near_miss = format!("{admin_key}x");
    let refused = browser
        .post(
            "/console/sign-in",
            &[("csrf", &csrf), ("admin_key", &near_miss), ("name", "")],
        )
        .await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    run.see("console refused sign-in", refused.body.clone(), &[]);
    let csrf = overview.csrf();
    let created = browser
        .post(
            "/console/tokens",
            &[
                ("csrf", &csrf),
                ("tenant", TENANT),
                ("name", "from the console"),
                ("owner_id", "alice"),
                ("permissions", "orders:read"),
            ],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let marker = "id=\"token-secret\" type=\"text\" readonly value=\"";
    let start = created
        .body
        .find(marker)
        .expect("the page shows the secret")
        + marker.len();
    let end = created.body[start..].find('"').expect("value ends") + start;
    let secret = created.body[start..end].to_owned();
    run.secrets.add("console token secret", &secret);
    run.see("console token created", created.body.clone(), &[&secret]);
    let listed = browser
        .get(&format!("/console/tokens?tenant={TENANT}"))
        .await;
    run.see("console token list", listed.body.clone(), &[]);

    let opened = run
        .admin()
        .create_portal_session(run.key(proto::CreatePortalSessionRequest {
            tenant: TENANT.to_owned(),
            principal_id: "alice".to_owned(),
            ..Default::default()
        }))
        .await
        .expect("portal session")
        .into_inner();
    let code = opened
        .url
        .split_once("code=")
        .map(|(_, code)| code.to_owned())
        .expect("the url carries a code");
    run.secrets.add("portal code", &code);
    run.see("portal session", format!("{opened:?}"), &[&code]);
    let mut portal = Browser::new(http);
    let entered = portal.get(&opened.url).await;
    run.see("portal entered", entered.body.clone(), &[]);
    let tokens = portal.get("/portal/").await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    run.see("portal tokens", tokens.body.clone(), &[]);
}

/// Admin calls that fail: bad input, rules, wrong credentials (tokens, signing keys and near
/// misses of the admin key in its place).
async fn failing_admin_calls(run: &mut Run, plain: &Issued, rotated: &Issued, graced: &Issued) {
    let mut bad = new_token(TENANT, "alice", &["orders"]);
    bad.name = String::new();
    bad.allowed_ips = vec!["10.0.0.0/33".to_owned()];
    bad.roles = vec!["no such role".to_owned()];
    let result = run.admin().create_token(run.key(bad)).await;
    run.expect_error("create with bad fields", result, Code::InvalidArgument)
        .await;
    // A secret pasted into the wrong field must not come back in the error either: errors end
    // up in clients' logs.
    for field in [
        "tenant",
        "owner_id",
        "permissions",
        "roles",
        "allowed_ips",
        "update_mask",
    ] {
        let secret = rotated.secret.clone();
        let mut pasted = new_token(TENANT, "alice", &["orders:read"]);
        let result = match field {
            "update_mask" => {
                let request = proto::UpdateTokenRequest {
                    id: graced.id.clone(),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec![secret],
                    }),
                    ..Default::default()
                };
                run.admin()
                    .update_token(run.key(request))
                    .await
                    .map(|_| tonic::Response::new(()))
            }
            _ => {
                match field {
                    "tenant" => pasted.tenant = secret,
                    "owner_id" => pasted.owner_id = secret,
                    "permissions" => pasted.permissions = vec![secret],
                    "roles" => pasted.roles = vec![secret],
                    _ => pasted.allowed_ips = vec![secret],
                }
                run.admin()
                    .create_token(run.key(pasted))
                    .await
                    .map(|_| tonic::Response::new(()))
            }
        };
        // Refused one way or another (a token is a well-formed tenant or owner id, which then
        // does not exist); what matters is what the refusal says. Errors about a role, a
        // network or a mask path name the value sent, so that its sender can find it: there the
        // pasted secret comes back to the caller who sent it (never into the log), and nothing
        // else may.
        let place = format!("a secret pasted into {field}");
        let status = result.expect_err(&place);
        let quoted = if ["roles", "allowed_ips", "update_mask"].contains(&field) {
            assert!(status.message().contains(&rotated.secret), "{status:?}");
            vec![rotated.secret.as_str()]
        } else {
            Vec::new()
        };
        run.see_status_quoting(&place, &status, &quoted);
    }
    let result = run
        .admin()
        .create_token(run.key(new_token(TENANT, "alice", &["billing:read"])))
        .await;
    run.expect_error("create beyond the owner", result, Code::PermissionDenied)
        .await;
    let result = run
        .admin()
        .create_token(run.key(new_token(TENANT, "nobody", &["orders:read"])))
        .await;
    run.expect_error("create for an unknown owner", result, Code::NotFound)
        .await;
    let result = run
        .admin()
        .rotate_token(run.key(proto::RotateTokenRequest {
            id: plain.id.clone(),
            grace_period: None,
        }))
        .await;
    run.expect_error("rotate a revoked token", result, Code::FailedPrecondition)
        .await;
    let result = run
        .admin()
        .rotate_token(run.key(proto::RotateTokenRequest {
            id: graced.id.clone(),
            grace_period: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
        }))
        .await;
    run.expect_error(
        "rotate with a negative grace",
        result,
        Code::InvalidArgument,
    )
    .await;

    let near_miss = {
        let mut key = run.admin_key.clone();
        let last = key.pop().expect("a key");
        key.push(if last == 'a' { 'b' } else { 'a' });
        key
    };
    for (label, credential) in [
        ("an api token", rotated.secret.clone()),
        ("a signing token's secret", graced.secret.clone()),
        ("a signing key", graced.signing_key.clone()),
        ("a near miss of the admin key", near_miss),
        (
            "the admin key's body under a token prefix",
            format!(
                "tsk_{}",
                run.admin_key
                    .split_once('_')
                    .map_or(run.admin_key.as_str(), |(_, body)| body)
            ),
        ),
    ] {
        let result = run
            .admin()
            .list_roles(with_key(
                proto::ListRolesRequest {
                    tenant: TENANT.to_owned(),
                },
                &credential,
            ))
            .await;
        run.expect_error(
            &format!("admin call with {label}"),
            result,
            Code::Unauthenticated,
        )
        .await;
    }
    let result = run
        .admin()
        .list_roles(proto::ListRolesRequest {
            tenant: TENANT.to_owned(),
        })
        .await;
    run.expect_error("admin call without a key", result, Code::Unauthenticated)
        .await;
    let malformed = run
        .authz()
        .check(proto::CheckRequest {
            token: rotated.secret.clone(),
            tenant: "not a tenant".to_owned(),
            ..Default::default()
        })
        .await;
    run.expect_error("check with a bad tenant", malformed, Code::InvalidArgument)
        .await;
}

/// Every read an admin tool makes: none issues anything, so none may show a secret.
async fn reads(run: &mut Run, token_id: &str) {
    macro_rules! read {
        ($label:literal, $method:ident, $message:expr) => {{
            let response = run.admin().$method(run.key($message)).await.expect($label);
            run.see_response($label, &response);
            response.into_inner()
        }};
    }
    let tenant = || TENANT.to_owned();
    read!(
        "get token",
        get_token,
        proto::GetTokenRequest {
            id: token_id.to_owned()
        }
    );
    read!(
        "list tokens",
        list_tokens,
        proto::ListTokensRequest {
            tenant: tenant(),
            include_revoked: true,
            ..Default::default()
        }
    );
    let audit = read!(
        "audit",
        list_audit_events,
        proto::ListAuditEventsRequest::default()
    );
    assert!(!audit.events.is_empty());
    read!(
        "get principal",
        get_principal,
        proto::GetPrincipalRequest {
            tenant: tenant(),
            id: "alice".to_owned(),
        }
    );
    read!(
        "list roles",
        list_roles,
        proto::ListRolesRequest { tenant: tenant() }
    );
    read!(
        "list principals",
        list_principals,
        proto::ListPrincipalsRequest {
            tenant: tenant(),
            ..Default::default()
        }
    );
    read!(
        "api status",
        get_api_status,
        proto::GetApiStatusRequest { tenant: tenant() }
    );
    read!(
        "usage",
        list_usage,
        proto::ListUsageRequest {
            tenant: tenant(),
            owner_id: "alice".to_owned(),
            ..Default::default()
        }
    );
}

/// The CLI: tables and JSON, issuing commands and the rest, a Check from argv and from stdin,
/// and a wrong admin key.
async fn cli_session(run: &mut Run, revoked_secret: &str) {
    let create =
        format!("token create --tenant {TENANT} --owner alice --name cli --permission orders:read");
    let created = run.cli(&format!("{create} --json"), "", true, 0).await;
    let created: serde_json::Value = serde_json::from_str(&created).expect("json");
    let cli_secret = created["secret"].as_str().expect("secret").to_owned();
    let cli_id = created["token"]["id"].as_str().expect("id").to_owned();
    run.token_ids.push(cli_id.clone());
    run.cli(&format!("{create} --require-signature"), "", true, 0)
        .await;
    run.cli(
        &format!("token rotate {cli_id} --grace 1h --json"),
        "",
        true,
        0,
    )
    .await;
    for command_line in [
        format!("token list --tenant {TENANT} --include-revoked"),
        format!("token list --tenant {TENANT} --include-revoked --json"),
        format!("token get {cli_id}"),
        format!("token get {cli_id} --json"),
        format!("audit --tenant {TENANT}"),
        format!("audit --tenant {TENANT} --json"),
        format!("usage {cli_id}"),
        format!("principal get alice --tenant {TENANT}"),
        // The grace period keeps the CLI's first secret working.
        format!("check {cli_secret} --tenant {TENANT} --permission orders:read"),
    ] {
        run.cli(&command_line, "", false, 0).await;
    }
    run.cli(
        &format!("check - --tenant {TENANT} --json"),
        &format!("{cli_secret}\n"),
        false,
        0,
    )
    .await;
    run.cli(
        &format!("check {revoked_secret} --tenant {TENANT}"),
        "",
        false,
        1,
    )
    .await;
    run.cli(
        &format!("check {cli_secret} --tenant {OTHER_TENANT} --json"),
        "",
        false,
        1,
    )
    .await;
    let real_key = run.admin_key.clone();
    run.admin_key = format!("{real_key}x");
    run.cli(&format!("token list --tenant {TENANT}"), "", false, 3)
        .await;
    run.admin_key = real_key;
}

async fn a_full_run_shows_each_secret_only_where_it_is_issued(backend: Backend) {
    let (master_key, master_key_bytes) = random_master_key();
    let database = match backend {
        Backend::Postgres => Some(TestDatabase::postgres().await),
        Backend::Sqlite => None,
    };
    let configured_keys = [random_key("adm"), random_key("adm")];
    let password = random_key("pw");
    let joined_keys = configured_keys.join(",");
    let mut variables = vec![
        ("TESSERA_LOG", "debug".to_owned()),
        ("TESSERA_MASTER_KEY", master_key.clone()),
        ("TESSERA_ENVOY_UNMATCHED", "authenticate".to_owned()),
        ("TESSERA_USAGE_FLUSH_INTERVAL_MS", "200".to_owned()),
        ("TESSERA_HTTP_LISTEN", "127.0.0.1:0".to_owned()),
    ];
    let mut database_password = None;
    if let Some(database) = &database {
        // Trust authentication ignores the password; the server still holds it as a secret.
        let url = with_password(database.url(), &password);
        database_password = url.is_some().then(|| password.clone());
        variables.push((
            "TESSERA_DATABASE_URL",
            url.unwrap_or_else(|| database.url().to_owned()),
        ));
        variables.push(("TESSERA_ADMIN_KEYS", joined_keys));
    }
    let variables: Vec<(&str, &str)> = variables
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let server = ServeProcess::start(&variables).await;
    // Ready means the store is reached, and so the bootstrap key written.
    let mut run = Run::start(&server).await;
    let admin_key = match backend {
        Backend::Sqlite => std::fs::read_to_string(server.dir().join("tessera-admin.key"))
            .expect("the bootstrap key file")
            .trim()
            .to_owned(),
        Backend::Postgres => configured_keys[0].clone(),
    };

    run.admin_key.clone_from(&admin_key);
    run.secrets.add("master key", &master_key);
    run.secrets.add_bytes("master key bytes", &master_key_bytes);
    run.secrets.add("admin key", &admin_key);
    if backend == Backend::Postgres {
        run.secrets.add("second admin key", &configured_keys[1]);
    }
    if let Some(password) = &database_password {
        run.secrets.add("database password", password);
    }
    drive(&mut run).await;

    let (status, log, dir) = server.terminate_keeping_dir().await;
    assert_eq!(status.code(), Some(0), "{log:#?}");

    // The log: debug level really was on, and the scan reads all of it (every token id is there).
    let log = log.join("\n");
    // "grpc call" is a debug span: its fields are on the lines only when debug is on.
    assert!(
        log.contains("\"name\":\"grpc call\""),
        "not a debug log:\n{log}"
    );
    for id in &run.token_ids {
        assert!(log.contains(id.as_str()), "the log names {id}");
    }
    run.secrets.assert_absent("the server's log", &log, &[]);
    for seen in &run.seen {
        run.secrets
            .assert_absent(&seen.place, &seen.text, &seen.allowed);
    }
    // A scan that finds nothing must be able to find something: issuing outputs do show theirs.
    let issuing = run
        .seen
        .iter()
        .filter(|seen| !seen.allowed.is_empty())
        .count();
    assert_eq!(
        issuing, 8,
        "three CLI commands issued secrets, three errors quoted one, a console page showed one \
         and a portal session's URL holds one"
    );
    for seen in run.seen.iter().filter(|seen| !seen.allowed.is_empty()) {
        assert!(
            !run.secrets.revealed_in(&seen.text, &[]).is_empty(),
            "{} shows its secret",
            seen.place
        );
    }

    // Every table: no secret, but the SHA-256 of the ones the store must recognise.
    let database_url = match &database {
        Some(database) => database.url().to_owned(),
        None => format!("sqlite://{}", dir.path().join("tessera.db").display()),
    };
    let columns = every_column(&database_url, backend).await;
    let tables: std::collections::BTreeSet<&str> = columns
        .iter()
        .filter_map(|(place, _)| place.split_once('.'))
        .map(|(table, _)| table)
        .collect();
    for table in [
        "tokens",
        "retired_secrets",
        "admin_keys",
        "audit_events",
        "usage_recent_calls",
    ] {
        assert!(
            tables.contains(table),
            "{table} was read; tables: {tables:?}"
        );
    }
    for (place, text) in &columns {
        run.secrets
            .assert_absent(&format!("column {place}"), text, &[]);
    }
    let everything = columns
        .iter()
        .map(|(_, text)| text.to_lowercase())
        .collect::<Vec<_>>()
        .join("\n");
    let stored: Vec<&Known> = run
        .secrets
        .known
        .iter()
        .filter(|known| {
            known.label.ends_with("secret")
                || (backend == Backend::Sqlite && known.label == "admin key")
        })
        .collect();
    assert!(
        stored.len() >= 8,
        "secrets whose hashes are stored: {}",
        stored.len()
    );
    for known in stored {
        assert!(
            everything.contains(&sha256_hex(&known.value)),
            "the SHA-256 of {} is stored",
            known.label
        );
    }
    drop(dir);
}

#[test]
fn debug_and_serialized_settings_show_no_master_key_admin_key_or_database_password() {
    let (master_key, master_key_bytes) = random_master_key();
    let admin_key = random_key("adm");
    let password = random_key("pw");
    let settings = Settings {
        master_key: Some(SecretString::from(master_key.clone())),
        admin_keys: vec![SecretString::from(admin_key.clone())],
        database_url: SecretString::from(format!("postgres://tessera:{password}@db:5432/tessera")),
        ..Settings::default()
    };
    let mut secrets = Secrets::default();
    secrets.add("master key", &master_key);
    secrets.add_bytes("master key bytes", &master_key_bytes);
    secrets.add("admin key", &admin_key);
    secrets.add("database password", &password);
    secrets.assert_absent(
        "Debug of Settings",
        &format!("{settings:?}{settings:#?}"),
        &[],
    );
    let serialized = serde_json::to_string(&settings).expect("serializes");
    secrets.assert_absent("serialized Settings", &serialized, &[]);
    let config = tessera::config::Config::parse(settings.clone()).expect("valid settings");
    let derived = format!(
        "{:?}{:?}{:?}{config:?}{config:#?}",
        config.authz.signing.master_key, config.authz.signing, config.authz
    );
    secrets.assert_absent("Debug of settings derived from Settings", &derived, &[]);
    // The scanner would see it: the exposed value is found.
    assert!(
        !secrets
            .revealed_in(settings.database_url.expose_secret(), &[])
            .is_empty()
    );
}

#[test]
fn debug_output_of_every_type_holding_a_secret_shows_none_of_it() {
    use tessera::domain::signature::{MasterKey, SigningKey};
    use tessera::domain::token::{TokenPrefix, generate};

    let (master_key_text, master_key_bytes) = random_master_key();
    let master_key =
        MasterKey::parse(&SecretString::from(master_key_text.clone())).expect("master key");
    let generated = generate(&TokenPrefix::default());
    let signing_key = SigningKey::generate();
    let token_id = tessera::domain::fields::TokenId::generate();
    let sealed = master_key.seal(&signing_key, &token_id);
    let issued = tessera::admin::IssuedToken {
        token: sample_token(token_id.clone(), &generated.hint),
        secret: generated.secret.clone(),
        signing_key: Some(signing_key.secret().clone()),
    };
    let new_token = tessera::domain::model::NewToken {
        token: sample_token(token_id, &generated.hint),
        secret_hash: generated.hash,
        signing_key: Some(sealed.clone()),
    };

    let mut secrets = Secrets::default();
    secrets.add("master key", &master_key_text);
    secrets.add_bytes("master key bytes", &master_key_bytes);
    secrets.add("token secret", generated.secret.expose_secret());
    secrets.add("signing key", signing_key.secret().expose_secret());
    let debug = format!(
        "{generated:?}\n{signing_key:?}\n{master_key:?}\n{sealed:?}\n{issued:?}\n{new_token:#?}\n{:?}",
        signing_key.verifier()
    );
    secrets.assert_absent("Debug of the secret-holding types", &debug, &[]);
    assert!(
        !secrets
            .revealed_in(generated.secret.expose_secret(), &[])
            .is_empty()
    );
}

fn sample_token(id: tessera::domain::fields::TokenId, hint: &str) -> tessera::domain::model::Token {
    use tessera::domain::fields::{Description, PrincipalId, Tenant, TokenName};
    let now = chrono::Utc::now();
    tessera::domain::model::Token {
        id,
        tenant: Tenant::parse(TENANT).expect("tenant"),
        owner_id: PrincipalId::parse("alice").expect("owner"),
        name: TokenName::parse("sample").expect("name"),
        description: Description::parse("").expect("description"),
        permissions: Vec::new(),
        roles: Vec::new(),
        allowed_ips: tessera::domain::network::IpAllowlist::default(),
        rate_limit_per_minute: 0,
        require_signature: true,
        secret_hint: hint.to_owned(),
        created_at: now,
        updated_at: now,
        expires_at: now + chrono::Duration::days(1),
        rotated_at: None,
        revoked_at: None,
        last_used_at: None,
        version: 1,
        imported: false,
        metadata: Default::default(),
        suspension: None,
        credits: None,
    }
}

#[tokio::test]
async fn a_start_refused_for_a_bad_secret_setting_does_not_print_the_secret() {
    let (master_key, _) = random_master_key();
    // 31 bytes: valid base64, wrong length.
    let short_master_key = STANDARD.encode(&STANDARD.decode(&master_key).expect("base64")[..31]);
    let short_admin_key = "short-admin-key";
    let long_admin_key = random_key("adm");
    let admin_keys = format!("{long_admin_key},{short_admin_key}");
    let mut secrets = Secrets::default();
    secrets.add("master key", &short_master_key);
    secrets.add("admin key", &long_admin_key);
    for (setting, value) in [
        ("TESSERA_MASTER_KEY", short_master_key.as_str()),
        ("TESSERA_ADMIN_KEYS", admin_keys.as_str()),
    ] {
        let (code, stderr) = serve_output(&[(setting, value), ("TESSERA_LOG", "debug")]).await;
        assert_ne!(code, Some(0), "{setting}: {stderr}");
        assert!(
            stderr.contains(setting),
            "the refusal names {setting}: {stderr}"
        );
        secrets.assert_absent(&format!("refusal of {setting}"), &stderr, &[]);
        assert!(!stderr.contains(short_admin_key), "{stderr}");
    }
}

backend_tests!(a_full_run_shows_each_secret_only_where_it_is_issued);
