//! Why an admin command failed, the message it prints and the exit code it ends with; the table
//! of codes is in the doc comment of the `cli` module.

use std::io::Write;
use std::process::ExitCode;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The exit codes, one per kind of failure.
pub(super) mod exit {
    pub const OK: u8 = 0;
    pub const DENIED: u8 = 1;
    pub const OTHER: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNAUTHENTICATED: u8 = 3;
    pub const UNREACHABLE: u8 = 4;
    pub const INVALID_ARGUMENT: u8 = 5;
    pub const NOT_FOUND: u8 = 6;
    pub const REFUSED: u8 = 7;
    pub const UNIMPLEMENTED: u8 = 8;
}

#[derive(Debug)]
pub(super) enum CliError {
    /// Flags that parse but do not make a command, e.g. `token update ID` with nothing to change.
    Usage(String),
    /// No usable admin key was found; the message says where one was looked for.
    AdminKey(String),
    /// The connection to the server could not be made.
    Unreachable(String),
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
            Self::Local(error) => (exit::OTHER, vec![format!("{error:#}")]),
            Self::Rpc { rpc, status } => describe_status(rpc, status, server),
        }
    }
}

fn unreachable_message(server: &str, cause: &str) -> String {
    format!("cannot reach the Tessera server at {server}: {cause}")
}

fn describe_status(rpc: &str, status: &Status, server: &str) -> (u8, Vec<String>) {
    let message = status.message();
    match status.code() {
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

/// `transport error: tcp connect error: Connection refused (os error 111)`: an error and its causes.
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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
    fn not_found_exits_6_and_other_codes_exit_1() {
        let not_found = rpc_error("GetToken", Status::not_found("no token tok_1"));
        assert_eq!(
            not_found.describe(SERVER),
            (6, vec!["not found: no token tok_1".to_owned()])
        );
        let internal = rpc_error("GetToken", Status::internal("boom"));
        assert_eq!(
            internal.describe(SERVER),
            (1, vec!["GetToken failed: internal: boom".to_owned()])
        );
    }
}
