//! `tessera.v1.AuthorizationService`: Check on every request of every internal service.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};

use crate::authz::{Authorizer, Decision};
use crate::domain::credits;
use crate::domain::decision::CheckInput;
use crate::domain::fields::Tenant;
use crate::domain::permission::{Permission, PermissionQuery};
use crate::domain::report_handle::HandleError;
use crate::domain::signature::PresentedSignature;
use crate::grpc::check_answer::CheckAnswer;
use crate::grpc::convert::{self, Violations};
use crate::grpc::status;
use crate::proto;
use crate::proto::authorization_service_server::AuthorizationService;
use crate::usage::{CLOCK_SKEW, Report, ReportSettings, Usage};

pub(crate) const MAX_USER_AGENT_LEN: usize = 1024;
pub(crate) const MAX_ENDPOINT_LEN: usize = 256;

pub struct AuthorizationApi {
    authorizer: Arc<Authorizer>,
    usage: Arc<Usage>,
}

impl AuthorizationApi {
    pub fn new(authorizer: Arc<Authorizer>, usage: Arc<Usage>) -> Self {
        Self { authorizer, usage }
    }

    /// Check: the decision and, when allowed, its report handle, encoded by the caller.
    pub async fn answer(
        &self,
        request: Request<proto::CheckRequest>,
    ) -> Result<CheckAnswer, Status> {
        let mut request = request.into_inner();
        let input = parse_check(&mut request, self.authorizer.default_tenant())?;
        let decision = self.authorizer.check(&request.token, &input).await;
        // One HMAC over about a hundred bytes.
        let report_handle = match (decision.outcome, &decision.credential) {
            (Ok(()), Some(credential)) => self.usage.report_settings().key.mint(
                &credential.token_id,
                &input.endpoint,
                input.now,
            ),
            _ => Vec::new(),
        };
        Ok(CheckAnswer::new(decision, report_handle))
    }
}

/// A malformed call (as opposed to a bad token, which is a normal deny) is INVALID_ARGUMENT.
/// Takes the endpoint and user agent out of the request rather than copying them. An empty
/// tenant is `default_tenant`.
pub fn parse_check(
    request: &mut proto::CheckRequest,
    default_tenant: &Tenant,
) -> Result<CheckInput, Status> {
    let mut violations = Violations::default();
    let tenant = violations.check("tenant", Tenant::parse_or(&request.tenant, default_tenant));
    let permission = if request.permission.is_empty() {
        Some(None)
    } else {
        violations.check(
            "permission",
            Permission::parse(&request.permission).map(Some),
        )
    };
    let all_permissions = violations.permissions("all_permissions", &request.all_permissions);
    let any_permissions = violations.permissions("any_permissions", &request.any_permissions);
    let client_ip = if request.client_ip.is_empty() {
        Some(None)
    } else {
        violations.check("client_ip", request.client_ip.parse::<IpAddr>().map(Some))
    };
    if request.user_agent.len() > MAX_USER_AGENT_LEN {
        violations.add(
            "user_agent",
            format!("must be at most {MAX_USER_AGENT_LEN} bytes"),
        );
    }
    if request.endpoint.len() > MAX_ENDPOINT_LEN {
        violations.add(
            "endpoint",
            format!("must be at most {MAX_ENDPOINT_LEN} bytes"),
        );
    }
    let cost = match request.cost {
        None => Some(1),
        Some(cost) if cost <= credits::MAX_COST => Some(cost),
        Some(_) => {
            violations.add("cost", format!("must be at most {}", credits::MAX_COST));
            None
        }
    };
    let parsed = (|| {
        Some(CheckInput {
            cost: cost?,
            tenant: tenant?,
            // Each list was checked against its bound above.
            permissions: PermissionQuery::new(permission?, all_permissions?, any_permissions?)
                .ok()?,
            client_ip: client_ip?,
            signature: request.signature.as_ref().map(|signature| {
                PresentedSignature::parse(
                    signature.timestamp,
                    &signature.signature,
                    signature.payload.clone(),
                )
            }),
            now: Utc::now(),
            endpoint: std::mem::take(&mut request.endpoint),
            user_agent: std::mem::take(&mut request.user_agent),
        })
    })();
    violations.finish(parsed)
}

/// The most a reported status may be: HTTP statuses are three digits.
const HTTP_STATUSES: std::ops::RangeInclusive<u32> = 100..=599;

/// What a report may claim, as of `now`.
struct ReportBounds<'a> {
    settings: &'a ReportSettings,
    now: DateTime<Utc>,
    /// No report may be older: its minute would already be pruned.
    retention: chrono::Duration,
}

/// Counts a refused report by why (a bounded set of labels).
fn refused(reason: &'static str) {
    metrics::counter!("tessera_usage_reports_refused_total", "reason" => reason).increment(1);
}

/// A report is bound to a real Check by its handle: the handle's token, endpoint and Check time
/// are what is recorded; the caller adds only the status, the duration and (bounded) the time.
/// Bare token ids are taken only when the server allows them.
fn parse_report(
    request: proto::ReportUsageRequest,
    bounds: &ReportBounds<'_>,
) -> Result<Report, Status> {
    let settings = bounds.settings;
    let mut violations = Violations::default();
    let claims = if request.report_handle.is_empty() {
        if !settings.accept_bare_token_ids {
            refused("missing_handle");
            violations.add(
                "report_handle",
                "is required: pass the report_handle of the Check's response",
            );
        }
        None
    } else {
        match settings.key.open(&request.report_handle) {
            Ok(claims) => Some(claims),
            Err(HandleError::Forged) => {
                refused("forged_handle");
                return Err(status::report_handle_refused(format!(
                    "{} (replicas must share TESSERA_REPORT_HANDLE_KEY or TESSERA_MASTER_KEY)",
                    HandleError::Forged
                )));
            }
            Err(malformed @ HandleError::Malformed) => {
                refused("malformed_handle");
                violations.add("report_handle", malformed.to_string());
                None
            }
        }
    };
    if let Some(claims) = &claims {
        if claims.checked_at < bounds.now - settings.handle_lifetime {
            refused("expired_handle");
            violations.add(
                "report_handle",
                format!(
                    "has expired: reports are accepted for {} s after the Check",
                    settings.handle_lifetime.num_seconds()
                ),
            );
        } else if claims.checked_at > bounds.now + CLOCK_SKEW {
            refused("expired_handle");
            violations.add("report_handle", "is dated in the future");
        }
    }
    let token_id = match &claims {
        Some(claims) => {
            if !request.token_id.is_empty() && request.token_id != claims.token_id.as_str() {
                violations.add("token_id", "does not match the report_handle's token");
            }
            Some(claims.token_id.clone())
        }
        None => convert::token_id(&mut violations, "token_id", &request.token_id),
    };
    let endpoint = match claims.as_ref() {
        Some(claims) => {
            if !request.endpoint.is_empty() && request.endpoint != claims.endpoint {
                violations.add("endpoint", "does not match the report_handle's endpoint");
            }
            claims.endpoint.clone()
        }
        None => {
            if request.endpoint.len() > MAX_ENDPOINT_LEN {
                violations.add(
                    "endpoint",
                    format!("must be at most {MAX_ENDPOINT_LEN} bytes"),
                );
            }
            request.endpoint
        }
    };
    let http_status = if HTTP_STATUSES.contains(&request.http_status) {
        u16::try_from(request.http_status).ok()
    } else {
        violations.add("http_status", "must be an HTTP status, 100 to 599");
        None
    };
    let longest = settings.handle_lifetime;
    let duration = violations
        .duration("duration", request.duration)
        .and_then(|duration| violations.require("duration", duration))
        .and_then(|duration| {
            if duration > longest {
                violations.add(
                    "duration",
                    format!("must be at most {} s", longest.num_seconds()),
                );
                return None;
            }
            duration.to_std().ok()
        });
    let time = violations
        .timestamp("time", request.time)
        .map(|time| time.unwrap_or(bounds.now))
        .and_then(|time| {
            if time > bounds.now + CLOCK_SKEW {
                refused("time_out_of_range");
                violations.add(
                    "time",
                    format!(
                        "must not be after now (plus {} s of clock skew)",
                        CLOCK_SKEW.num_seconds()
                    ),
                );
                return None;
            }
            if time < bounds.now - bounds.retention {
                refused("time_out_of_range");
                violations.add(
                    "time",
                    format!(
                        "must be within the usage retention ({} days)",
                        bounds.retention.num_days()
                    ),
                );
                return None;
            }
            Some(time)
        });
    let parsed = (|| {
        // With a handle the report counts at its Check, which the caller cannot choose.
        let time = time?;
        Some(Report {
            token_id: token_id?,
            endpoint,
            http_status: http_status?,
            duration: duration?,
            time: claims.as_ref().map_or(time, |claims| claims.checked_at),
        })
    })();
    violations.finish(parsed)
}

/// Check for a request in Tessera's wire form: parsed at the edge, then decided. Envoy's
/// ext_authz maps its requests onto this same function, so both paths decide alike (and the
/// benchmarks compare them through it).
pub async fn decide(
    authorizer: &Authorizer,
    mut request: proto::CheckRequest,
) -> Result<Decision, Status> {
    let input = parse_check(&mut request, authorizer.default_tenant())?;
    Ok(authorizer.check(&request.token, &input).await)
}

#[tonic::async_trait]
impl AuthorizationService for AuthorizationApi {
    /// Served by [`AuthorizationServer`](crate::grpc::check_answer::AuthorizationServer)
    /// through [`AuthorizationApi::answer`]; this is the same answer as the generated message.
    async fn check(
        &self,
        request: Request<proto::CheckRequest>,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        let answer = self.answer(request).await?;
        Ok(Response::new(answer.into_message()))
    }

    /// Accepted into the usage recorder without a database round trip. Only a handle this
    /// fleet signed gets there (unless bare ids are allowed), so a report's token existed and
    /// was allowed at its Check; forged, unknown or out-of-range reports are refused here and
    /// never reach the flush.
    async fn report_usage(
        &self,
        request: Request<proto::ReportUsageRequest>,
    ) -> Result<Response<proto::ReportUsageResponse>, Status> {
        let bounds = ReportBounds {
            settings: self.usage.report_settings(),
            now: Utc::now(),
            retention: self.usage.retention(),
        };
        let report = parse_report(request.into_inner(), &bounds)?;
        self.usage.report(report);
        Ok(Response::new(proto::ReportUsageResponse {}))
    }
}
