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
use crate::grpc::status;
use crate::proto;
use crate::proto::authorization_service_server::AuthorizationService;

pub(crate) const MAX_USER_AGENT_LEN: usize = 1024;
pub(crate) const MAX_ENDPOINT_LEN: usize = 256;

pub struct AuthorizationApi {
    authorizer: Arc<Authorizer>,
}

impl AuthorizationApi {
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        Self { authorizer }
    }
}

/// A malformed call (as opposed to a bad token, which is a normal deny) is INVALID_ARGUMENT.
fn parse_check(request: &proto::CheckRequest) -> Result<CheckInput, Status> {
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
        })
    })();
    violations.finish(parsed)
}

/// Check for a request in Tessera's wire form: parsed at the edge, then decided. Envoy's
/// ext_authz maps its requests onto this same function, so both paths decide alike.
pub(crate) async fn decide(
    authorizer: &Authorizer,
    request: proto::CheckRequest,
) -> Result<Decision, Status> {
    let input = parse_check(&request)?;
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

    async fn report_usage(
        &self,
        _request: Request<proto::ReportUsageRequest>,
    ) -> Result<Response<proto::ReportUsageResponse>, Status> {
        Err(status::unimplemented("ReportUsage"))
    }
}
