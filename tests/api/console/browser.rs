//! A real browser through the console and the portal: Debian's chromium, driven by
//! playwright-core from npm (tests/browser/*.mjs), against the real server. The script asks
//! this test to do what happens outside the browser (a service's Check with the copied secret)
//! over a line protocol: `ASK {json}` on its stdout, the answer as a JSON line on its stdin,
//! `DONE` at the end.
//!
//! Needs `node`, `/usr/bin/chromium` and `.ci/node/node_modules/playwright-core`, which
//! `bash .ci/run` installs; the test fails (never skips) without them. With
//! `TESSERA_UPDATE_SCREENSHOTS=1` the screenshots are written to docs/screenshots/ (the README
//! shows them); otherwise to a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use tessera::proto;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{http, spawn_console_with};
use crate::helpers::{Backend, TestApp, new_token};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What the scripts need, or a panic that says how to get it.
fn require_browser_tools() -> PathBuf {
    let chromium = std::env::var("TESSERA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the browser tests need Debian's chromium at {chromium}: apt-get install -y chromium \
         (bash .ci/run installs it)"
    );
    let playwright = repo().join(".ci/node/node_modules/playwright-core/package.json");
    assert!(
        playwright.exists(),
        "the browser tests need playwright-core in .ci/node: bash .ci/run installs it, or \
         npm install --prefix .ci/node --no-save playwright-core@1.65.1"
    );
    PathBuf::from(chromium)
}

fn screenshots_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    if std::env::var_os("TESSERA_UPDATE_SCREENSHOTS").is_some() {
        let dir = repo().join("docs/screenshots");
        std::fs::create_dir_all(&dir).expect("docs/screenshots");
        (dir, None)
    } else {
        let temp = tempfile::tempdir().expect("temp dir");
        (temp.path().to_path_buf(), Some(temp))
    }
}

/// A browser script that did not end with DONE and exit code 0: its log, printed as is by the
/// test's `Error:` line. A returned error, unlike a panic, prints no backtrace after it, so the
/// script's own message is the last thing a CI log's tail shows.
struct ScriptFailed(String);

impl std::fmt::Debug for ScriptFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs `script` with `env`, answering its questions with `answer`; fails unless it ends with
/// DONE and exit code 0, keeping its screenshots (the failure's included) where it says.
async fn run_script(
    app: &TestApp,
    script: &str,
    env: &[(&str, String)],
    answer: impl AsyncFn(&TestApp, Value) -> Value,
) -> Result<(), ScriptFailed> {
    let chromium = require_browser_tools();
    let (screenshots, temporary) = screenshots_dir();
    let mut command = tokio::process::Command::new("node");
    command
        .arg(repo().join("tests/browser").join(script))
        .env("TESSERA_HTTP_URL", format!("http://{}", http(app)))
        .env("TESSERA_SCREENSHOTS", &screenshots)
        .env("TESSERA_CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .spawn()
        .expect("node starts (the browser tests need Node.js)");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let stderr = child.stderr.take().expect("stderr");
    let log = tokio::spawn(async move {
        let mut text = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let mut done = false;
    let finished = tokio::time::timeout(std::time::Duration::from_secs(240), async {
        while let Some(line) = lines.next_line().await.expect("script output") {
            if let Some(question) = line.strip_prefix("ASK ") {
                let question: Value = serde_json::from_str(question).expect("a JSON question");
                let reply = answer(app, question).await;
                stdin
                    .write_all(format!("{reply}\n").as_bytes())
                    .await
                    .expect("answer written");
            } else if line == "DONE" {
                done = true;
            }
        }
        child.wait().await.expect("node ends")
    })
    .await;
    // On a timeout the child is killed (kill_on_drop), which ends its stderr and so the log.
    drop(child);
    let log = log.await.unwrap_or_default();
    let outcome = match finished {
        Ok(status) if status.success() && done => return Ok(()),
        Ok(status) => format!("failed ({status})"),
        Err(_) => "took over 4 minutes".to_owned(),
    };
    // Kept, so the failure's screenshot can be looked at after the test ends.
    let screenshots = temporary.map_or(screenshots, tempfile::TempDir::keep);
    Err(ScriptFailed(format!(
        "{script} {outcome}; screenshots in {}; its log:\n{log}",
        screenshots.display()
    )))
}

/// A service's Check with what the browser copied.
async fn answer_check(app: &TestApp, question: Value) -> Value {
    let secret = question["check"].as_str().expect("a secret to check");
    let permission = question["permission"].as_str().unwrap_or("orders:read");
    let answer = app
        .check(proto::CheckRequest {
            token: secret.to_owned(),
            permission: permission.to_owned(),
            endpoint: "GET /orders".to_owned(),
            user_agent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0 Safari/537.36".to_owned(),
            client_ip: "203.0.113.7".to_owned(),
            ..Default::default()
        })
        .await;
    json!({ "allowed": answer.allowed })
}

#[tokio::test]
async fn an_operator_creates_copies_checks_rotates_and_revokes_a_token_in_a_real_browser()
-> Result<(), ScriptFailed> {
    let app = spawn_console_with(Backend::Sqlite, |settings| {
        settings.usage_flush_interval_ms = 50;
    })
    .await;
    app.principal("", "alice", &["orders:*", "products:read"])
        .await;
    run_script(
        &app,
        "console.mjs",
        &[("TESSERA_ADMIN_KEY", app.admin_key.clone())],
        answer_check,
    )
    .await
}

#[tokio::test]
async fn a_portal_user_manages_only_their_own_tokens_from_a_one_time_url_in_a_real_browser()
-> Result<(), ScriptFailed> {
    let app = spawn_console_with(Backend::Sqlite, |settings| {
        settings.usage_flush_interval_ms = 50;
    })
    .await;
    app.principal("", "alice", &["orders:*", "products:read"])
        .await;
    app.principal("", "bob", &["orders:read"]).await;
    let (bobs, _) = app.token(new_token("", "bob", &["orders:read"])).await;
    let opened = super::open_portal(&app, "", "alice").await;
    run_script(
        &app,
        "portal.mjs",
        &[
            ("TESSERA_PORTAL_URL", opened.url),
            ("TESSERA_OTHER_TOKEN_ID", bobs.id),
        ],
        answer_check,
    )
    .await
}
