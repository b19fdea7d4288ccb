//! `tessera.v1.AuthorizationService`: Check on every request of every internal service.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::Utc;
use tonic::{Request, Response, Status};

use crate::authz::{Authorizer, Decision};
use crate::domain::decision::CheckInput;
use crate::domain::fields::Tenant;
use crate::domain::permission::Permission;
use crate::domain::signature::PresentedSignature;
use crate::grpc::convert::{self, Violations};
use crate::proto;
use crate::proto::authorization_service_server::AuthorizationService;
use crate::usage::{Report, Usage};

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
}

/// A malformed call (as opposed to a bad token, which is a normal deny) is INVALID_ARGUMENT.
/// Takes the endpoint and user agent out of the request rather than copying them.
pub fn parse_check(request: &mut proto::CheckRequest) -> Result<CheckInput, Status> {
    let mut violations = Violations::default();
    let tenant = violations.check("tenant", Tenant::parse(&request.tenant));
    let permission = if request.permission.is_empty() {
        Some(None)
    } else {
        violations.check(
            "permission",
            Permission::parse(&request.permission).map(Some),
        )
    };
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
    let parsed = (|| {
        Some(CheckInput {
            tenant: tenant?,
            permission: permission?,
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

fn parse_report(request: proto::ReportUsageRequest) -> Result<Report, Status> {
    let mut violations = Violations::default();
    let token_id = convert::token_id(&mut violations, "token_id", &request.token_id);
    if request.endpoint.len() > MAX_ENDPOINT_LEN {
        violations.add(
            "endpoint",
            format!("must be at most {MAX_ENDPOINT_LEN} bytes"),
        );
    }
    let http_status = if HTTP_STATUSES.contains(&request.http_status) {
        u16::try_from(request.http_status).ok()
    } else {
        violations.add("http_status", "must be an HTTP status, 100 to 599");
        None
    };
    let duration = violations
        .duration("duration", request.duration)
        .and_then(|duration| violations.require("duration", duration))
        .and_then(|duration| duration.to_std().ok());
    let time = violations.timestamp("time", request.time);
    let parsed = (|| {
        Some(Report {
            token_id: token_id?,
            endpoint: request.endpoint,
            http_status: http_status?,
            duration: duration?,
            time: time?.unwrap_or_else(Utc::now),
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
    let input = parse_check(&mut request)?;
    Ok(authorizer.check(&request.token, &input).await)
}

#[tonic::async_trait]
impl AuthorizationService for AuthorizationApi {
    async fn check(
        &self,
        request: Request<proto::CheckRequest>,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        let decision = decide(&self.authorizer, request.into_inner()).await?;
        Ok(Response::new(convert::check_response(&decision)))
    }

    /// Accepted into the usage recorder without a database round trip; reports for a token
    /// that does not exist are dropped when the recorder flushes.
    async fn report_usage(
        &self,
        request: Request<proto::ReportUsageRequest>,
    ) -> Result<Response<proto::ReportUsageResponse>, Status> {
        let report = parse_report(request.into_inner())?;
        self.usage.report(report);
        Ok(Response::new(proto::ReportUsageResponse {}))
    }
}
