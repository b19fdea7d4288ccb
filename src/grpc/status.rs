//! The one place where errors become `tonic::Status`.
//!
//! Every status carries the standard code plus `google.rpc` details: `BadRequest` field
//! violations for invalid input and `ErrorInfo` with a stable reason. Internal causes are logged
//! here and never sent.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

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

pub fn unimplemented(what: &str) -> Status {
    with_reason(
        Code::Unimplemented,
        format!("{what} is not yet available on this server"),
        "UNIMPLEMENTED",
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

fn with_reason(code: Code, message: String, reason: &str) -> Status {
    let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, []);
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
            AdminError::Unavailable(source) => unavailable("admin", &source),
            AdminError::Internal(source) => {
                tracing::error!(error = %source, "internal error in admin call");
                with_reason(Code::Internal, "internal error".to_owned(), "INTERNAL")
            }
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
                with_reason(Code::Internal, "internal error".to_owned(), "INTERNAL")
            }
        }
    }
}
