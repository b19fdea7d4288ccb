//! Why an admin command failed, the message it prints and the exit code it ends with; the table
//! of codes is in the doc comment of the `cli` module.

use std::io::Write;
use std::process::ExitCode;

use tokio_rustls::rustls;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The exit codes, one per kind of failure; 1 is only ever `check`'s "denied", so a script can
/// tell a denial from a failure to ask.
pub(super) mod exit {
    pub const OK: u8 = 0;
    pub const DENIED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNAUTHENTICATED: u8 = 3;
    pub const UNREACHABLE: u8 = 4;
    pub const INVALID_ARGUMENT: u8 = 5;
    pub const NOT_FOUND: u8 = 6;
    pub const REFUSED: u8 = 7;
    pub const UNIMPLEMENTED: u8 = 8;
    pub const TLS: u8 = 9;
    pub const OTHER: u8 = 10;
}

/// The ErrorInfo reason of an admin call refused for want of a client certificate
/// (`src/grpc/status.rs`).
const CLIENT_CERTIFICATE_REQUIRED: &str = "CLIENT_CERTIFICATE_REQUIRED";

#[derive(Debug)]
pub(super) enum CliError {
    /// Flags that parse but do not make a command, e.g. `token update ID` with nothing to change.
    Usage(String),
    /// No usable admin key was found; the message says where one was looked for.
    AdminKey(String),
    /// The connection to the server could not be made.
    Unreachable(String),
    /// The TLS handshake failed; the message says why (see [`tls_problem`]).
    Tls(String),
    /// The server answered an RPC with an error status.
    Rpc { rpc: &'static str, status: Status },
    /// A failure on this machine, e.g. reading the token from stdin.
    Local(anyhow::Error),
}

/// The message an RPC answered, or the error naming the RPC:
/// `let token = answer("GetToken", client.get_token(request).await)?`.
pub(super) fn answer<T>(
    rpc: &'static str,
    outcome: Result<tonic::Response<T>, Status>,
) -> Result<T, CliError> {
    outcome
        .map(tonic::Response::into_inner)
        .map_err(|status| CliError::Rpc { rpc, status })
}

impl CliError {
    /// Prints the error on stderr and returns its exit code.
    pub(super) fn print(&self, server: &str) -> ExitCode {
        let (exit_code, lines) = self.describe(server);
        let mut stderr = std::io::stderr().lock();
        for line in lines {
            // Server messages may quote what a caller sent: shown escaped, as in tables.
            let line = super::table::printable(&line, super::table::Newlines::Escape);
            // Nothing sensible is left to do when stderr itself is gone.
            let _ = writeln!(stderr, "error: {line}");
        }
        ExitCode::from(exit_code)
    }

    /// The exit code and the lines to print, without the `error: ` prefix.
    fn describe(&self, server: &str) -> (u8, Vec<String>) {
        match self {
            Self::Usage(message) => (exit::USAGE, vec![message.clone()]),
            Self::AdminKey(message) => (exit::UNAUTHENTICATED, vec![message.clone()]),
            Self::Unreachable(cause) => {
                (exit::UNREACHABLE, vec![unreachable_message(server, cause)])
            }
            Self::Tls(problem) => (exit::TLS, vec![tls_message(server, problem)]),
            Self::Local(error) => (exit::OTHER, vec![format!("{error:#}")]),
            Self::Rpc { rpc, status } => describe_status(rpc, status, server),
        }
    }
}

fn unreachable_message(server: &str, cause: &str) -> String {
    format!("cannot reach the Tessera server at {server}: {cause}")
}

fn tls_message(server: &str, problem: &str) -> String {
    format!("the TLS handshake with {server} failed: {problem}")
}

fn describe_status(rpc: &str, status: &Status, server: &str) -> (u8, Vec<String>) {
    let message = status.message();
    // With TLS 1.3 the server judges the client's certificate after the client has finished its
    // side of the handshake, so its refusal arrives with the first call.
    if let Some(problem) = tls_problem(status) {
        return (exit::TLS, vec![tls_message(server, &problem)]);
    }
    // The server's alert races the call: the call may instead see only the connection close.
    let closed_by_transport = matches!(status.code(), Code::Cancelled | Code::Unknown)
        && std::error::Error::source(status).is_some();
    if closed_by_transport && server.starts_with("https://") {
        return (
            exit::TLS,
            vec![tls_message(
                server,
                "the server closed the connection right after the handshake: it requires a \
                 client certificate (pass --client-cert and --client-key) or refused the one \
                 given",
            )],
        );
    }
    match status.code() {
        Code::Unauthenticated
            if status
                .get_error_details()
                .error_info()
                .is_some_and(|info| info.reason == CLIENT_CERTIFICATE_REQUIRED) =>
        {
            (
                exit::UNAUTHENTICATED,
                vec![
                    "the server requires a client certificate for admin calls; pass \
                     --client-cert and --client-key (or set TESSERA_CLIENT_CERT and \
                     TESSERA_CLIENT_KEY)"
                        .to_owned(),
                ],
            )
        }
        Code::Unauthenticated => (
            exit::UNAUTHENTICATED,
            vec![
                "the admin key was rejected; pass --admin-key or set TESSERA_ADMIN_KEY".to_owned(),
            ],
        ),
        Code::Unavailable => (
            exit::UNREACHABLE,
            vec![unreachable_message(server, message)],
        ),
        Code::InvalidArgument => (exit::INVALID_ARGUMENT, invalid_argument_lines(status)),
        Code::NotFound => (exit::NOT_FOUND, vec![format!("not found: {message}")]),
        Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::ResourceExhausted
        // A stale `--etag`: the token changed since it was read.
        | Code::Aborted
        | Code::AlreadyExists => (exit::REFUSED, vec![code_and_message(status)]),
        Code::Unimplemented => (
            exit::UNIMPLEMENTED,
            vec![format!("{rpc} is not yet available on this server")],
        ),
        _ => (
            exit::OTHER,
            vec![format!("{rpc} failed: {}", code_and_message(status))],
        ),
    }
}

/// One line per field violation of the status's `google.rpc.BadRequest` detail, else its message.
fn invalid_argument_lines(status: &Status) -> Vec<String> {
    let violations = status
        .get_error_details()
        .bad_request()
        .map(|bad_request| bad_request.field_violations.clone())
        .unwrap_or_default();
    if violations.is_empty() {
        return vec![format!("invalid argument: {}", status.message())];
    }
    violations
        .iter()
        .map(|violation| {
            format!(
                "invalid argument: {}: {}",
                violation.field, violation.description
            )
        })
        .collect()
}

/// `failed precondition: the token is revoked`: the code as words, then the server's message.
fn code_and_message(status: &Status) -> String {
    let code = format!("{:?}", status.code());
    let mut words = String::new();
    for character in code.chars() {
        if character.is_uppercase() && !words.is_empty() {
            words.push(' ');
        }
        words.push(character.to_ascii_lowercase());
    }
    if status.message().is_empty() {
        words
    } else {
        format!("{words}: {}", status.message())
    }
}

/// What went wrong in a TLS handshake, in words that say what to do, when `error` or one of its
/// causes is a rustls error; None for any other failure.
pub(super) fn tls_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(current) = next {
        // `io::Error` hides the error it wraps from `source()`: look inside it too.
        let inner = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(current), inner].into_iter().flatten() {
            if let Some(tls) = candidate.downcast_ref::<rustls::Error>() {
                return Some(describe_tls(tls));
            }
            // Some layers keep only the rustls error's text.
            if let Some(problem) = describe_tls_text(&candidate.to_string()) {
                return Some(problem);
            }
        }
        next = current.source();
    }
    None
}

const UNKNOWN_CA: &str = "the server's certificate is not signed by a CA this client trusts; \
                          pass the CA that signed it with --ca-cert (or TESSERA_CA_CERT)";
const NAME_MISMATCH: &str = "the server's certificate is not valid for the name in --server \
                             (name mismatch); use a name the certificate lists";
const EXPIRED: &str = "the server's certificate has expired";
const CLIENT_CERT_REQUIRED: &str = "the server requires a client certificate; pass --client-cert \
                                    and --client-key (or set TESSERA_CLIENT_CERT and \
                                    TESSERA_CLIENT_KEY)";
const CLIENT_CERT_REFUSED: &str = "the server rejected the client certificate (not signed by a CA \
                                   it trusts for clients)";
const NOT_TLS: &str =
    "the server did not answer in TLS; if it serves plaintext, use an http:// --server";

fn describe_tls(error: &rustls::Error) -> String {
    use rustls::{AlertDescription, CertificateError};
    let problem = match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => UNKNOWN_CA,
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => NAME_MISMATCH,
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => EXPIRED,
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => CLIENT_CERT_REQUIRED,
        rustls::Error::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied,
        ) => CLIENT_CERT_REFUSED,
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => NOT_TLS,
        other => return other.to_string(),
    };
    problem.to_owned()
}

/// [`describe_tls`] for an error of which only rustls' text is left (its `Display`).
fn describe_tls_text(text: &str) -> Option<String> {
    let problem = if text.contains("invalid peer certificate: UnknownIssuer") {
        UNKNOWN_CA
    } else if text.contains("invalid peer certificate: NotValidForName") {
        NAME_MISMATCH
    } else if text.contains("invalid peer certificate: Expired") {
        EXPIRED
    } else if text.contains("received fatal alert: CertificateRequired") {
        CLIENT_CERT_REQUIRED
    } else if [
        "UnknownCA",
        "BadCertificate",
        "CertificateUnknown",
        "AccessDenied",
    ]
    .iter()
    .any(|alert| text.contains(&format!("received fatal alert: {alert}")))
    {
        CLIENT_CERT_REFUSED
    } else {
        return None;
    };
    Some(problem.to_owned())
}

/// `transport error: tcp connect error: Connection refused (os error 111)`: an error and its causes.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Wrappers often repeat their cause's text; print each distinct part once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;

    const SERVER: &str = "http://127.0.0.1:50051";

    fn rpc_error(rpc: &'static str, status: Status) -> CliError {
        CliError::Rpc { rpc, status }
    }

    #[test]
    fn invalid_argument_prints_each_field_violation_and_exits_5() {
        let mut details = ErrorDetails::new();
        details
            .add_bad_request_violation("name", "must not be empty")
            .add_bad_request_violation("allowed_ips[0]", "not an IP or CIDR");
        let status = Status::with_error_details(Code::InvalidArgument, "invalid token", details);
        let error = rpc_error("CreateToken", status);
        let (exit_code, lines) = error.describe(SERVER);
        assert_eq!(exit_code, 5);
        assert_eq!(
            lines,
            [
                "invalid argument: name: must not be empty",
                "invalid argument: allowed_ips[0]: not an IP or CIDR"
            ]
        );
    }

    #[test]
    fn invalid_argument_without_details_prints_the_message() {
        let error = rpc_error("CreateToken", Status::invalid_argument("bad ttl"));
        assert_eq!(error.describe(SERVER).1, ["invalid argument: bad ttl"]);
    }

    #[test]
    fn a_rejected_admin_key_exits_3_and_says_how_to_pass_one() {
        let error = rpc_error("GetToken", Status::unauthenticated("bad key"));
        let (exit_code, lines) = error.describe(SERVER);
        assert_eq!(exit_code, 3);
        assert_eq!(
            lines,
            ["the admin key was rejected; pass --admin-key or set TESSERA_ADMIN_KEY"]
        );
    }

    #[test]
    fn refusals_exit_7_with_the_server_message() {
        for status in [
            Status::failed_precondition("the token is revoked"),
            Status::permission_denied("the token is revoked"),
            Status::resource_exhausted("the token is revoked"),
            Status::already_exists("the token is revoked"),
        ] {
            let code = status.code();
            let (exit_code, lines) = rpc_error("RotateToken", status).describe(SERVER);
            assert_eq!(exit_code, 7, "{code:?}");
            assert!(lines[0].ends_with(": the token is revoked"), "{lines:?}");
        }
    }

    #[test]
    fn a_missing_client_certificate_for_admin_calls_exits_3_and_names_the_flags() {
        let mut details = ErrorDetails::new();
        details.set_error_info(CLIENT_CERTIFICATE_REQUIRED, "tessera", []);
        let status = Status::with_error_details(Code::Unauthenticated, "no cert", details);
        let (exit_code, lines) = rpc_error("GetToken", status).describe(SERVER);
        assert_eq!(exit_code, 3);
        assert!(
            lines[0].contains("--client-cert and --client-key"),
            "{lines:?}"
        );
    }

    #[test]
    fn tls_failures_inside_io_errors_are_found_and_named() {
        let unknown_ca = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let problem = tls_problem(&unknown_ca).expect("a tls problem");
        assert!(problem.contains("--ca-cert"), "{problem}");
        let refused = std::io::Error::other("connection refused");
        assert_eq!(tls_problem(&refused), None);
    }

    #[test]
    fn failed_precondition_reads_as_words() {
        let status = Status::failed_precondition("the token is revoked");
        assert_eq!(
            code_and_message(&status),
            "failed precondition: the token is revoked"
        );
    }

    #[test]
    fn unimplemented_exits_8_and_says_not_yet_available() {
        let error = rpc_error("ListUsage", Status::unimplemented(""));
        let (exit_code, lines) = error.describe(SERVER);
        assert_eq!(exit_code, 8);
        assert_eq!(lines, ["ListUsage is not yet available on this server"]);
    }

    #[test]
    fn unavailable_and_connect_errors_exit_4_naming_the_server() {
        let from_rpc = rpc_error("GetToken", Status::unavailable("connection reset"));
        let from_connect = CliError::Unreachable("connection refused".to_owned());
        for error in [from_rpc, from_connect] {
            let (exit_code, lines) = error.describe(SERVER);
            assert_eq!(exit_code, 4);
            assert!(
                lines[0].starts_with("cannot reach the Tessera server at http://127.0.0.1:50051:")
            );
        }
    }

    #[test]
    fn not_found_exits_6_and_other_codes_exit_10_never_1_which_means_denied() {
        let not_found = rpc_error("GetToken", Status::not_found("no token tok_1"));
        assert_eq!(
            not_found.describe(SERVER),
            (6, vec!["not found: no token tok_1".to_owned()])
        );
        let internal = rpc_error("GetToken", Status::internal("boom"));
        assert_eq!(
            internal.describe(SERVER),
            (10, vec!["GetToken failed: internal: boom".to_owned()])
        );
    }
}
