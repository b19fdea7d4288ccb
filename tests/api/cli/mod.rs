//! The `tessera` admin client: the real binary against the real server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

mod backup;
mod events;
mod papercuts;
mod policy;
mod portal;
mod tls;
mod webhook;

const TENANT: &str = "acme";
/// A well-formed token id that no server has issued.
const UNKNOWN_TOKEN_ID: &str = "tok_01ARZ3NDEKTSV4RRFFQ69G5FAV";

/// One run of the `tessera` binary, built up like its command line.
struct Tessera {
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: String,
    dir: Option<PathBuf>,
}

/// How a run ended and what it printed.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Tessera {
    /// The binary with these space-separated arguments and no `TESSERA_*` variables; values with
    /// spaces go through [`Tessera::flag`].
    fn new(args: &str) -> Self {
        let args = args.split_whitespace().map(str::to_owned).collect();
        Self {
            args,
            env: Vec::new(),
            stdin: String::new(),
            dir: None,
        }
    }

    /// Against the app's server, with its admin key.
    fn against(app: &TestApp, args: &str) -> Self {
        Self::new(args)
            .flag("--server", &app.grpc_url)
            .flag("--admin-key", &app.admin_key)
    }

    fn flag(mut self, name: &str, value: &str) -> Self {
        self.args.extend([name.to_owned(), value.to_owned()]);
        self
    }

    /// Sets an environment variable for the run.
    fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    fn stdin(mut self, text: &str) -> Self {
        text.clone_into(&mut self.stdin);
        self
    }

    fn in_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    /// Runs on a blocking thread, so the server task of the same test keeps serving.
    async fn run(self) -> Outcome {
        tokio::task::spawn_blocking(move || self.run_blocking())
            .await
            .expect("the binary's thread")
    }

    fn run_blocking(self) -> Outcome {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(&self.args)
            .env_remove("TESSERA_SERVER")
            .env_remove("TESSERA_ADMIN_KEY")
            .env_remove("TESSERA_ACTOR")
            .env_remove("TESSERA_CA_CERT")
            .env_remove("TESSERA_CLIENT_CERT")
            .env_remove("TESSERA_CLIENT_KEY")
            .envs(self.env)
            .current_dir(self.dir.unwrap_or_else(std::env::temp_dir))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the tessera binary starts");
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(self.stdin.as_bytes())
            .expect("stdin written");
        drop(stdin);
        let output = child.wait_with_output().expect("the tessera binary ends");
        Outcome {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Outcome {
    /// Stdout, once the exit code is as expected.
    fn stdout(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "{self:#?}");
        &self.stdout
    }

    /// Stderr, once the exit code is as expected.
    fn stderr(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "{self:#?}");
        &self.stderr
    }

    /// Stdout as JSON, once the exit code is as expected.
    fn json(&self, code: i32) -> Value {
        let stdout = self.stdout(code);
        serde_json::from_str(stdout).unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"))
    }
}

#[track_caller]
fn assert_contains(text: &str, expected: &str) {
    assert!(text.contains(expected), "expected {expected:?} in:\n{text}");
}

/// Some line of a table holds all the given cells.
#[track_caller]
fn assert_row(table: &str, cells: &[&str]) {
    let found = table
        .lines()
        .any(|line| cells.iter().all(|cell| line.contains(cell)));
    assert!(found, "expected a row with {cells:?} in:\n{table}");
}

#[track_caller]
fn assert_starts_with(text: &str, expected: &str) {
    assert!(
        text.starts_with(expected),
        "expected to start with {expected:?}:\n{text}"
    );
}

/// A principal `alice` in `acme` holding orders and product reads, and a `reporting` role.
async fn app_with_alice() -> TestApp {
    let app = spawn_app().await;
    let principal = "principal upsert alice --tenant acme --permission orders:read,orders:write";
    Tessera::against(&app, principal)
        .flag("--permission", "products:read")
        .run()
        .await
        .stdout(0);
    let role = "role upsert reporting --tenant acme --permission products:read";
    admin(&app, role).await.stdout(0);
    app
}

/// `token create` for alice in `acme` with the given name and further arguments.
async fn create_for_alice(app: &TestApp, name: &str, args: &str) -> Outcome {
    let create = format!("token create --owner alice --tenant acme {args}");
    Tessera::against(app, &create)
        .flag("--name", name)
        .run()
        .await
}

/// Creates a token for alice with `--json` and returns its id and secret.
async fn create_token(app: &TestApp, name: &str, permissions: &str) -> (String, String) {
    let created = create_for_alice(
        app,
        name,
        &format!("--role reporting --json --permission {permissions}"),
    )
    .await
    .json(0);
    let id = created["token"]["id"]
        .as_str()
        .expect("token id")
        .to_owned();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    (id, secret)
}

/// An admin command against the app's server, with its admin key.
async fn admin(app: &TestApp, args: &str) -> Outcome {
    Tessera::against(app, args).run().await
}

/// An admin command against a server of its own, with nothing in it.
async fn on_a_new_server(args: &str) -> Outcome {
    admin(&spawn_app().await, args).await
}

/// `check` as a service would call it: no admin key.
async fn check(app: &TestApp, secret: &str, permission: &str) -> Outcome {
    Tessera::new("check --tenant acme")
        .flag("--server", &app.grpc_url)
        .flag("--permission", permission)
        .flag("--", secret)
        .run()
        .await
}

#[tokio::test]
async fn a_newcomer_can_grant_check_rotate_and_revoke_a_token_from_the_command_line() {
    let app = app_with_alice().await;
    let (id, secret) = create_token(&app, "ci deploy", "orders:read").await;

    assert_starts_with(
        check(&app, &secret, "orders:read").await.stdout(0),
        "allowed",
    );
    assert_starts_with(
        check(&app, &secret, "products:read").await.stdout(0),
        "allowed",
    );
    let denied = check(&app, &secret, "orders:write").await;
    assert_starts_with(denied.stdout(1), "denied: permission_denied");

    let rotated = admin(&app, &format!("token rotate {id} --json"))
        .await
        .json(0);
    let new_secret = rotated["secret"].as_str().expect("new secret");
    assert_ne!(new_secret, secret);
    assert_starts_with(
        check(&app, &secret, "orders:read").await.stdout(1),
        "denied",
    );
    let from_stdin = Tessera::new("check - --tenant acme --permission orders:read")
        .flag("--server", &app.grpc_url)
        .stdin(&format!("{new_secret}\n"))
        .run()
        .await;
    assert_starts_with(from_stdin.stdout(0), "allowed");

    let revoked = admin(&app, &format!("token revoke {id}")).await;
    assert_starts_with(
        revoked.stdout(0),
        &format!("revoked token {id} (ci deploy) of owner alice"),
    );
    let after_revoke = check(&app, new_secret, "orders:read").await;
    assert_starts_with(after_revoke.stdout(1), "denied: token_revoked");
}

#[tokio::test]
async fn a_created_token_shows_its_secret_once_with_a_warning() {
    let app = app_with_alice().await;
    let created = create_for_alice(&app, "nightly export", "--ttl 30d").await;
    let stdout = created.stdout(0);
    assert_contains(stdout, "nightly export");
    let secret_line = stdout
        .lines()
        .find(|line| line.starts_with("secret: tsk_"))
        .expect("a secret line");
    let secret = secret_line.trim_start_matches("secret: ");
    assert_eq!(stdout.matches(secret).count(), 1, "{stdout}");
    assert_contains(
        stdout,
        &format!("{secret_line}\nstore it now; it will not be shown again"),
    );
}

#[tokio::test]
async fn the_token_list_table_shows_the_token_name_and_state() {
    let app = app_with_alice().await;
    create_token(&app, "billing sync", "orders:read").await;
    let listed = admin(&app, "token list --tenant acme --all").await;
    assert_row(
        listed.stdout(0),
        &["billing sync", "alice", "active", "orders:read"],
    );
}

#[tokio::test]
async fn an_update_changes_only_the_fields_its_flags_name() {
    let app = app_with_alice().await;
    let (id, _) = create_token(&app, "before", "orders:read").await;
    let update = format!("token update {id} --name after --rate-limit 5 --json");
    let token = &admin(&app, &update).await.json(0)["token"];
    assert_eq!(token["name"], "after");
    assert_eq!(token["rate_limit_per_minute"], 5);
    assert_eq!(token["permissions"], json!(["orders:read"]));
    assert_eq!(token["roles"], json!(["reporting"]));
}

#[tokio::test]
async fn json_output_is_one_object_per_command_with_proto_field_names() {
    let app = app_with_alice().await;
    let (id, _) = create_token(&app, "json check", "orders:read").await;
    // `--json` is global: it works before the subcommand too.
    let token = admin(&app, &format!("--json token get {id}")).await.json(0);
    assert_eq!(token["token"]["state"], "TOKEN_STATE_ACTIVE");
    assert_eq!(token["token"]["tenant"], TENANT);
    let tokens = admin(&app, "token list --tenant acme --json").await.json(0);
    assert_eq!(tokens["tokens"][0]["id"], id.as_str());
    assert_eq!(tokens["next_page_token"], "");
    let principal = admin(&app, "principal get alice --tenant acme --json")
        .await
        .json(0);
    assert_eq!(
        principal["principal"]["permissions"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let roles = admin(&app, "role list --tenant acme --json").await.json(0);
    assert_eq!(roles["roles"][0]["name"], "reporting");
    let status = admin(&app, "api status --tenant acme --json").await.json(0);
    assert_eq!(status["status"]["online"], true);
    let audit = admin(&app, "audit --all --json").await.json(0);
    assert!(
        audit["events"]
            .as_array()
            .is_some_and(|events| events.len() >= 3),
        "{audit}"
    );
    let malformed = Tessera::new("check tsk_not_a_token --json")
        .flag("--server", &app.grpc_url)
        .run()
        .await;
    assert_eq!(malformed.json(1)["reason"], "DENY_REASON_TOKEN_MALFORMED");
}

#[tokio::test]
async fn switching_the_api_offline_makes_checks_answer_api_offline_until_it_is_online_again() {
    let app = app_with_alice().await;
    let (_, secret) = create_token(&app, "ops", "orders:read").await;
    admin(&app, "api offline --tenant acme --message maintenance")
        .await
        .stdout(0);
    let offline = check(&app, &secret, "orders:read").await;
    assert_starts_with(offline.stdout(1), "denied: api_offline");
    admin(&app, "api online --tenant acme").await.stdout(0);
    check(&app, &secret, "orders:read").await.stdout(0);
}

#[tokio::test]
async fn the_audit_log_names_the_actor_given_with_actor() {
    let app = spawn_app().await;
    admin(&app, "principal upsert bob --actor carol@example.com")
        .await
        .stdout(0);
    let audit = admin(&app, "audit").await;
    assert_row(
        audit.stdout(0),
        &["carol@example.com", "principal.upsert", "bob"],
    );
}

#[tokio::test]
async fn the_admin_key_defaults_to_the_key_file_in_the_working_directory() {
    let app = spawn_app().await;
    assert!(
        app.dir.path().join("tessera-admin.key").exists(),
        "the server wrote its bootstrap key file"
    );
    let listed = Tessera::new("role list")
        .flag("--server", &app.grpc_url)
        .in_dir(app.dir.path())
        .run()
        .await;
    listed.stdout(0);
}

#[tokio::test]
async fn a_rejected_admin_key_exits_3_and_says_how_to_pass_one() {
    let app = spawn_app().await;
    let outcome = Tessera::new("token list --admin-key not-the-admin-key")
        .flag("--server", &app.grpc_url)
        .run()
        .await;
    let stderr = outcome.stderr(3);
    assert_contains(
        stderr,
        "the admin key was rejected; pass --admin-key or set TESSERA_ADMIN_KEY",
    );
    assert!(
        !stderr.contains("not-the-admin-key"),
        "the key is never printed: {stderr}"
    );
}

#[tokio::test]
async fn an_unreachable_server_exits_4_naming_its_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    drop(listener);
    let outcome = Tessera::new("token get tok_1 --admin-key any")
        .flag("--server", &url)
        .run()
        .await;
    assert_contains(
        outcome.stderr(4),
        &format!("cannot reach the Tessera server at {url}"),
    );
}

#[tokio::test]
async fn an_invalid_field_exits_5_naming_the_field() {
    let app = app_with_alice().await;
    let outcome = create_for_alice(&app, "ok", "--allow-ip not-an-ip").await;
    assert_contains(outcome.stderr(5), "invalid argument: allowed_ips");
}

#[tokio::test]
async fn an_unknown_token_id_exits_6() {
    let not_found = on_a_new_server(&format!("token get {UNKNOWN_TOKEN_ID}")).await;
    assert_starts_with(not_found.stderr(6), "error: not found");
}

#[tokio::test]
async fn rotating_a_revoked_token_exits_7_with_the_server_message() {
    let app = app_with_alice().await;
    let (id, _) = create_token(&app, "short lived", "orders:read").await;
    admin(&app, &format!("token revoke {id}")).await.stdout(0);
    let outcome = admin(&app, &format!("token rotate {id}")).await;
    assert_starts_with(outcome.stderr(7), "error: failed precondition: ");
}

#[tokio::test]
async fn usage_shows_the_figures_as_a_table_with_a_chart_of_calls_per_day_or_as_json() {
    let app = app_with_alice().await;
    let (id, secret) = create_token(&app, "reporting", "orders:read").await;
    for _ in 0..3 {
        check(&app, &secret, "orders:read").await.stdout(0);
    }
    // The flush is write-behind: wait until the JSON shows the calls.
    let mut json = Value::Null;
    for _ in 0..200 {
        json = admin(&app, &format!("usage {id} --days 7 --json"))
            .await
            .json(0);
        if json["total_calls"] == json!(3) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(json["total_calls"], json!(3), "{json:#}");
    assert_eq!(json["daily"].as_array().map(Vec::len), Some(7));
    assert_eq!(json["recent_calls"][0]["permission"], json!("orders:read"));

    let table = admin(&app, &format!("usage {id} --days 7"))
        .await
        .stdout(0)
        .to_owned();
    assert_row(&table, &["total calls", "3"]);
    assert_row(&table, &["calls last 24h", "3"]);
    assert_contains(&table, "calls per day (UTC):");
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    assert_row(&table, &[&today, &"█".repeat(40), " 3"]);
}

#[tokio::test]
async fn an_update_without_changes_is_a_usage_error_before_any_call() {
    let no_server = "http://127.0.0.1:1";
    let outcome = Tessera::new("token update tok_1")
        .flag("--server", no_server)
        .run()
        .await;
    assert_contains(outcome.stderr(2), "nothing to update");
}

#[tokio::test]
async fn control_characters_and_bidi_overrides_in_server_strings_are_printed_escaped() {
    let app = app_with_alice().await;
    // Both pass the server's parsers: names may hold a bidi override, descriptions a CR.
    let mut request = crate::helpers::new_token(TENANT, "alice", &["orders:read"]);
    request.name = "invoice\u{202E}fdp.exe".to_owned();
    request.description = "first\roverwritten".to_owned();
    let (token, _) = app.token(request).await;

    let shown = admin(&app, &format!("token get {}", token.id)).await;
    let stdout = shown.stdout(0);
    assert!(
        !stdout.contains('\u{202E}') && !stdout.contains('\r'),
        "raw control characters reached the terminal: {stdout:?}"
    );
    assert_contains(stdout, "invoice\\u{202e}fdp.exe");
    assert_contains(stdout, "first\\u{d}overwritten");

    let listed = admin(&app, "token list --tenant acme --all").await;
    assert_contains(listed.stdout(0), "invoice\\u{202e}fdp.exe");
}

#[tokio::test]
async fn an_operator_hands_a_tenant_its_own_admin_key_and_rotates_it_from_the_command_line() {
    let app = app_with_alice().await;
    let create = "admin-key create --name acme-backend --role token-manager --tenant acme --json";
    let created = admin(&app, create).await.json(0);
    let id = created["admin_key"]["id"].as_str().expect("id").to_owned();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert_starts_with(&id, "adk_");
    assert_starts_with(&secret, "tsa_");
    assert_eq!(created["admin_key"]["role"], "ADMIN_ROLE_TOKEN_MANAGER");
    assert_eq!(created["admin_key"]["tenants"], json!(["acme"]));
    let as_tenant = |args: &str| {
        Tessera::new(args)
            .flag("--server", &app.grpc_url)
            .flag("--admin-key", &secret)
    };

    as_tenant("token list --tenant acme").run().await.stdout(0);
    let refused = as_tenant("token list --tenant globex").run().await;
    assert_contains(refused.stderr(7), "globex");
    let no_keys = as_tenant("admin-key list").run().await;
    assert_contains(no_keys.stderr(7), "admin_keys.read");

    let listed = admin(&app, "admin-key list").await;
    assert_row(
        listed.stdout(0),
        &[&id, "acme-backend", "token_manager", "acme"],
    );
    let shown = admin(&app, &format!("admin-key get {id}")).await;
    assert_contains(shown.stdout(0), "acme-backend");
    assert!(!shown.stdout.contains(&secret), "{shown:#?}");

    let revoked = admin(&app, &format!("admin-key revoke {id}")).await;
    assert_starts_with(revoked.stdout(0), &format!("revoked admin key {id}"));
    as_tenant("token list --tenant acme").run().await.stderr(3);
}
