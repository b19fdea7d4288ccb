//! `tessera check TOKEN`: AuthorizationService/Check, as a service would call it.

use std::io::BufRead;

use tessera::proto;

use super::connect::authorization_client;
use super::error::{CliError, answer};
use super::record::{Field, Record};
use super::{ClientArgs, Report, table};

/// Reads the token from stdin instead of the command line, where shell history would keep it.
const FROM_STDIN: &str = "-";

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The token to check, or `-` to read it from stdin.
    token: String,

    /// Tenant the request is for [default: the server's default tenant].
    #[arg(long)]
    tenant: Option<String>,

    /// Permission the request needs, e.g. orders:read [default: authenticate only].
    #[arg(long)]
    permission: Option<String>,

    /// More permissions the request needs, every one, comma-separated.
    #[arg(long, value_name = "PERMISSION,...", value_delimiter = ',')]
    all_permissions: Vec<String>,

    /// Permissions of which the request needs at least one, comma-separated.
    #[arg(long, value_name = "PERMISSION,...", value_delimiter = ',')]
    any_permissions: Vec<String>,

    /// The end client's IP, for allowlists.
    #[arg(long, value_name = "IP")]
    ip: Option<String>,

    /// The end client's User-Agent.
    #[arg(long, value_name = "UA")]
    user_agent: Option<String>,

    /// Label for usage statistics, e.g. "GET /api/v1/orders".
    #[arg(long)]
    endpoint: Option<String>,

    /// The request's signature (base64 of HMAC-SHA256 over TIMESTAMP, a newline and PAYLOAD),
    /// for tokens that require signed requests.
    #[arg(long, requires = "timestamp")]
    signature: Option<String>,

    /// Unix seconds at which the signature was made.
    #[arg(
        long,
        value_name = "UNIX_SECONDS",
        requires = "signature",
        allow_negative_numbers = true
    )]
    timestamp: Option<i64>,

    /// The text that was signed [default: empty].
    #[arg(long, requires = "signature")]
    payload: Option<String>,

    /// Credits the request costs a token with credits, 0 (free) to 1000000 [default: 1].
    #[arg(long)]
    cost: Option<u32>,
}

pub(super) async fn run(args: &ClientArgs, check: CheckArgs) -> Result<Report, CliError> {
    let token = if check.token == FROM_STDIN {
        read_token_from_stdin().await?
    } else {
        check.token
    };
    let mut client = authorization_client(args).await?;
    let request = proto::CheckRequest {
        token,
        tenant: check.tenant.unwrap_or_default(),
        permission: check.permission.unwrap_or_default(),
        client_ip: check.ip.unwrap_or_default(),
        user_agent: check.user_agent.unwrap_or_default(),
        endpoint: check.endpoint.unwrap_or_default(),
        signature: check.signature.map(|signature| proto::Signature {
            timestamp: check.timestamp.unwrap_or_default(),
            signature,
            payload: check.payload.unwrap_or_default().into_bytes(),
        }),
        all_permissions: check.all_permissions,
        any_permissions: check.any_permissions,
        cost: check.cost,
    };
    let decision = answer("Check", client.check(request).await)?;
    Ok(decision_report(&decision))
}

/// The first line of stdin, read on a blocking thread (tokio here has no async stdin).
async fn read_token_from_stdin() -> Result<String, CliError> {
    let read = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    })
    .await;
    let line = read
        .map_err(anyhow::Error::new)
        .and_then(|read| read.map_err(anyhow::Error::new))
        .map_err(|error| CliError::Local(error.context("cannot read the token from stdin")))?;
    let token = line.trim();
    if token.is_empty() {
        return Err(CliError::Usage("no token on stdin".to_owned()));
    }
    Ok(token.to_owned())
}

/// The decision: `allowed`, or `denied: <reason>`, over the response's table; denied exits 1.
fn decision_report(decision: &proto::CheckResponse) -> Report {
    let record = Record::from(decision);
    let verdict = match record.get("reason") {
        _ if decision.allowed => "allowed".to_owned(),
        Some(Field::Enum { label, .. }) => format!("denied: {label}"),
        _ => "denied".to_owned(),
    };
    let report = Report::new(
        record.to_json(),
        format!("{verdict}\n{}", table::document(&record)),
    );
    if decision.allowed {
        report
    } else {
        report.denied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denied_check_names_its_reason_and_exits_1() {
        let decision = proto::CheckResponse {
            allowed: false,
            reason: proto::DenyReason::TokenRevoked as i32,
            http_status: 401,
            ..Default::default()
        };
        let report = decision_report(&decision);
        assert!(
            report.human.starts_with("denied: token_revoked\n"),
            "{}",
            report.human
        );
        assert_eq!(report.json["reason"], "DENY_REASON_TOKEN_REVOKED");
        assert!(report.denied);
    }

    #[test]
    fn an_allowed_check_says_so_and_exits_0() {
        let decision = proto::CheckResponse {
            allowed: true,
            reason: proto::DenyReason::Allowed as i32,
            ..Default::default()
        };
        let report = decision_report(&decision);
        assert!(report.human.starts_with("allowed\n"));
        assert!(!report.denied);
    }
}
