//! The one place where errors become `tonic::Status`.
//!
//! Every status carries the standard code plus `google.rpc` details: `BadRequest` field
//! violations for invalid input and `ErrorInfo` with a stable reason. Internal causes are logged
//! here and never sent.

use crate::events::EventsError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, PreconditionViolation, StatusExt};

use crate::admin::AdminError;
use crate::usage::UsageError;

const ERROR_DOMAIN: &str = "tessera.dev";

/// Invalid input: INVALID_ARGUMENT naming every bad field.
pub fn invalid_argument(violations: Vec<FieldViolation>) -> Status {
    let summary = violations
        .iter()
        .map(|violation| format!("{}: {}", violation.field, violation.description))
        .collect::<Vec<_>>()
        .join("; ");
    let mut details = ErrorDetails::with_bad_request(violations);
    details.set_error_info("INVALID_ARGUMENT", ERROR_DOMAIN, []);
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid argument: {summary}"),
        details,
    )
}

/// A presented admin key that is not (or no longer) accepted; `message` says why, never the key.
pub fn unauthenticated(message: &'static str) -> Status {
    with_reason(Code::Unauthenticated, message.to_owned(), "UNAUTHENTICATED")
}

/// A report handle this server did not sign (forged, altered, or minted under another key):
/// a well-formed claim the server refuses, so PERMISSION_DENIED rather than INVALID_ARGUMENT,
/// still naming the field; retrying it cannot succeed.
pub fn report_handle_refused(description: String) -> Status {
    let mut details =
        ErrorDetails::with_bad_request(vec![FieldViolation::new("report_handle", &description)]);
    details.set_error_info("REPORT_HANDLE_FORGED", ERROR_DOMAIN, []);
    Status::with_error_details(
        Code::PermissionDenied,
        format!("report_handle: {description}"),
        details,
    )
}

pub fn unavailable(context: &str, error: &dyn std::error::Error) -> Status {
    tracing::warn!(error = %error, context, "store unavailable");
    with_reason(
        Code::Unavailable,
        "the token store is unavailable; retry later".to_owned(),
        "STORE_UNAVAILABLE",
    )
}

/// A broken invariant of the server's own code: logged with `context`, answered as every
/// internal error is (docs/api.md, error model).
pub fn internal(context: &'static str) -> Status {
    tracing::error!(context, "internal error");
    internal_error()
}

fn internal_error() -> Status {
    with_reason(Code::Internal, "internal error".to_owned(), "INTERNAL")
}

// The gate's answers (`src/app/gate.rs`): calls refused or ended around the services, before
// or instead of their own answer.

/// The gated services are not routed yet: the store has not been reached since the start.
pub fn server_starting() -> Status {
    with_reason(
        Code::Unavailable,
        "the server is starting: its database is not reachable yet; retry shortly".to_owned(),
        "SERVER_STARTING",
    )
}

/// A TokenAdminService call without a verified client certificate while mTLS is configured.
pub fn client_certificate_required() -> Status {
    with_reason(
        Code::Unauthenticated,
        "TokenAdminService requires a client certificate (mTLS) in addition to an admin key"
            .to_owned(),
        "CLIENT_CERTIFICATE_REQUIRED",
    )
}

/// Every concurrency permit is taken: refused at once, never queued.
pub fn concurrency_limit() -> Status {
    with_reason(
        Code::ResourceExhausted,
        "the server is at its concurrency limit; retry with backoff".to_owned(),
        "CONCURRENCY_LIMIT",
    )
}

/// The call ran past the server's per-call timeout.
pub fn request_timeout() -> Status {
    with_reason(
        Code::DeadlineExceeded,
        "the call took longer than the server's per-call timeout".to_owned(),
        "REQUEST_TIMEOUT",
    )
}

/// The call was still running when shutdown's drain deadline passed.
pub fn shutting_down() -> Status {
    with_reason(
        Code::Unavailable,
        "the server is shutting down and its drain deadline passed; retry".to_owned(),
        "SERVER_SHUTTING_DOWN",
    )
}

/// A service or method this server does not serve.
pub fn unknown_method() -> Status {
    with_reason(
        Code::Unimplemented,
        "this server does not serve that method".to_owned(),
        "UNKNOWN_METHOD",
    )
}

fn with_reason(code: Code, message: String, reason: &str) -> Status {
    with_reason_and(code, message, reason, [])
}

/// A status whose ErrorInfo also carries `metadata`, such as the right that is missing.
fn with_reason_and<const N: usize>(
    code: Code,
    message: String,
    reason: &str,
    metadata: [(String, String); N],
) -> Status {
    let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

impl From<AdminError> for Status {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::InvalidField { field, description } => {
                invalid_argument(vec![FieldViolation::new(field, description)])
            }
            AdminError::NotFound(entity) => {
                with_reason(Code::NotFound, format!("{entity} not found"), "NOT_FOUND")
            }
            AdminError::TokenRevoked => with_reason(
                Code::FailedPrecondition,
                "the token is revoked; revoked tokens cannot be changed".to_owned(),
                "TOKEN_REVOKED",
            ),
            AdminError::NoCredits => with_reason(
                Code::FailedPrecondition,
                error.to_string(),
                "TOKEN_HAS_NO_CREDITS",
            ),
            AdminError::RoleInUse { role, tokens } => with_reason(
                Code::FailedPrecondition,
                format!(
                    "role {role} is named by {tokens} tokens that are not revoked; take it off \
                     them (UpdateToken roles) or revoke them first"
                ),
                "ROLE_IN_USE",
            ),
            AdminError::OwnerTokenLimit { limit } => with_reason(
                Code::ResourceExhausted,
                format!("the owner already has {limit} live tokens; revoke one first"),
                "OWNER_TOKEN_LIMIT",
            ),
            AdminError::EtagMismatch => with_reason(
                Code::Aborted,
                "the token changed since the given etag; read it again and retry".to_owned(),
                "ETAG_MISMATCH",
            ),
            AdminError::BeyondOwner { field, grants } => {
                let message = format!(
                    "{field}: beyond the owner's permissions: {}",
                    grants.join(", ")
                );
                let mut details = ErrorDetails::with_bad_request(vec![FieldViolation::new(
                    field,
                    message.clone(),
                )]);
                details.set_error_info("BEYOND_OWNER", ERROR_DOMAIN, []);
                Status::with_error_details(Code::PermissionDenied, message, details)
            }
            AdminError::PolicyViolation {
                rule,
                field,
                description,
            } => {
                let message = format!("{field}: {description} (policy rule {rule})");
                let mut details =
                    ErrorDetails::with_precondition_failure(vec![PreconditionViolation::new(
                        "TENANT_POLICY",
                        rule.as_str(),
                        &description,
                    )]);
                details.set_bad_request(vec![FieldViolation::new(field, description)]);
                details.set_error_info(
                    "POLICY_VIOLATION",
                    ERROR_DOMAIN,
                    [("rule".to_owned(), rule.as_str().to_owned())],
                );
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            AdminError::SecretExists { field, description } => {
                let message = format!("{field}: {description}");
                let mut details =
                    ErrorDetails::with_bad_request(vec![FieldViolation::new(field, description)]);
                details.set_error_info("SECRET_EXISTS", ERROR_DOMAIN, []);
                Status::with_error_details(Code::AlreadyExists, message, details)
            }
            AdminError::SigningUnavailable => {
                let message = "require_signature: request signing needs the server's master key; \
                               set TESSERA_MASTER_KEY (base64 of 32 random bytes) on the server"
                    .to_owned();
                let mut details = ErrorDetails::with_bad_request(vec![FieldViolation::new(
                    "require_signature",
                    message.clone(),
                )]);
                details.set_error_info("MASTER_KEY_MISSING", ERROR_DOMAIN, []);
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            AdminError::MissingRight { right } => with_reason_and(
                Code::PermissionDenied,
                format!(
                    "this admin key's role lacks the right {}; use a key whose role holds it",
                    right.as_str()
                ),
                "MISSING_RIGHT",
                [("right".to_owned(), right.as_str().to_owned())],
            ),
            AdminError::TenantNotInScope { tenant } => with_reason_and(
                Code::PermissionDenied,
                format!("this admin key may not act in tenant {tenant}"),
                "TENANT_NOT_IN_SCOPE",
                [("tenant".to_owned(), tenant)],
            ),
            AdminError::AllTenantsRequired { what } => with_reason(
                Code::PermissionDenied,
                format!("{what} needs an admin key scoped to every tenant"),
                "ALL_TENANTS_REQUIRED",
            ),
            AdminError::WebhookLimit { limit } => with_reason(
                Code::FailedPrecondition,
                format!("the tenant already has {limit} webhooks; delete one first"),
                "WEBHOOK_LIMIT",
            ),
            AdminError::WebhooksUnavailable => with_reason(
                Code::FailedPrecondition,
                "webhook secrets are stored sealed with the server's master key; set \
                 TESSERA_MASTER_KEY (base64 of 32 random bytes) on the server"
                    .to_owned(),
                "MASTER_KEY_MISSING",
            ),
            AdminError::Unavailable(source) => unavailable("admin", &source),
            AdminError::Internal(source) => {
                tracing::error!(error = %source, "internal error in admin call");
                internal_error()
            }
        }
    }
}

impl From<EventsError> for Status {
    fn from(error: EventsError) -> Self {
        match error {
            EventsError::CursorExpired { .. } => {
                with_reason(Code::OutOfRange, error.to_string(), "EVENT_CURSOR_EXPIRED")
            }
            EventsError::TooManyWatchers { .. } => with_reason(
                Code::ResourceExhausted,
                error.to_string(),
                "TOO_MANY_WATCHERS",
            ),
            // A store failure is read as the admin calls read it.
            EventsError::Store(source) => AdminError::from(source).into(),
        }
    }
}

impl From<UsageError> for Status {
    fn from(error: UsageError) -> Self {
        match error {
            UsageError::NotFound(entity) => {
                with_reason(Code::NotFound, format!("{entity} not found"), "NOT_FOUND")
            }
            UsageError::Unavailable(source) => unavailable("usage", &source),
            UsageError::Internal(source) => {
                tracing::error!(error = %source, "internal error in usage call");
                internal_error()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code, the ErrorInfo domain and reason, and the message a status carries.
    fn parts(status: &Status) -> (Code, Option<(String, String)>, &str) {
        let info = status
            .get_details_error_info()
            .map(|info| (info.domain, info.reason));
        (status.code(), info, status.message())
    }

    fn expected(
        code: Code,
        reason: &str,
        message: &'static str,
    ) -> (Code, Option<(String, String)>, &'static str) {
        (
            code,
            Some((ERROR_DOMAIN.to_owned(), reason.to_owned())),
            message,
        )
    }

    #[test]
    fn every_status_the_gate_answers_itself_keeps_its_code_and_message_and_carries_a_reason() {
        let cases = [
            (
                server_starting(),
                expected(
                    Code::Unavailable,
                    "SERVER_STARTING",
                    "the server is starting: its database is not reachable yet; retry shortly",
                ),
            ),
            (
                client_certificate_required(),
                expected(
                    Code::Unauthenticated,
                    "CLIENT_CERTIFICATE_REQUIRED",
                    "TokenAdminService requires a client certificate (mTLS) in addition to an \
                     admin key",
                ),
            ),
            (
                concurrency_limit(),
                expected(
                    Code::ResourceExhausted,
                    "CONCURRENCY_LIMIT",
                    "the server is at its concurrency limit; retry with backoff",
                ),
            ),
            (
                request_timeout(),
                expected(
                    Code::DeadlineExceeded,
                    "REQUEST_TIMEOUT",
                    "the call took longer than the server's per-call timeout",
                ),
            ),
            (
                shutting_down(),
                expected(
                    Code::Unavailable,
                    "SERVER_SHUTTING_DOWN",
                    "the server is shutting down and its drain deadline passed; retry",
                ),
            ),
            (
                unknown_method(),
                expected(
                    Code::Unimplemented,
                    "UNKNOWN_METHOD",
                    "this server does not serve that method",
                ),
            ),
        ];
        for (status, expected) in &cases {
            assert_eq!(parts(status), *expected);
        }
    }

    #[test]
    fn a_broken_invariant_is_an_internal_error_that_tells_the_caller_nothing_more() {
        let status = internal("request parsing lost a field");
        assert_eq!(
            parts(&status),
            expected(Code::Internal, "INTERNAL", "internal error")
        );
    }
}

#[cfg(test)]
mod scope_tests {
    use super::*;
    use crate::admin::Right;

    #[test]
    fn a_missing_right_is_permission_denied_naming_the_right_in_its_error_info() {
        let status = Status::from(AdminError::MissingRight {
            right: Right::WriteTokens,
        });
        assert_eq!(status.code(), Code::PermissionDenied);
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "MISSING_RIGHT");
        assert_eq!(
            info.metadata.get("right").map(String::as_str),
            Some("tokens.write")
        );
        assert!(status.message().contains("tokens.write"), "{status:?}");
    }

    #[test]
    fn a_policy_violation_is_failed_precondition_naming_the_rule_and_the_field() {
        let status = Status::from(AdminError::PolicyViolation {
            rule: crate::domain::policy::PolicyRule::MaxLifetime,
            field: "ttl".to_owned(),
            description: "at most 30 days".to_owned(),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "POLICY_VIOLATION");
        assert_eq!(
            info.metadata.get("rule").map(String::as_str),
            Some("max_lifetime")
        );
        let failure = status
            .get_details_precondition_failure()
            .expect("precondition failure");
        assert_eq!(failure.violations[0].subject, "max_lifetime");
        let bad_request = status.get_details_bad_request().expect("bad request");
        assert_eq!(bad_request.field_violations[0].field, "ttl");
    }

    #[test]
    fn a_tenant_out_of_scope_is_permission_denied_naming_the_tenant() {
        let status = Status::from(AdminError::TenantNotInScope {
            tenant: "globex".to_owned(),
        });
        assert_eq!(status.code(), Code::PermissionDenied);
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "TENANT_NOT_IN_SCOPE");
        assert_eq!(
            info.metadata.get("tenant").map(String::as_str),
            Some("globex")
        );
    }
}
