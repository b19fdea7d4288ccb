//! One unary call as the generator sends it: the request is encoded once and sent as bytes, and
//! the answer is decoded only as far as its verdict, so the client does the same small work in
//! every scenario and the difference between scenarios is the server's.

use prost::Message;
use prost::bytes::{BufMut, Bytes};
use tessera::proto::{CheckRequest, DenyReason};
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;

/// Which RPC a probe calls; decides how its answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// `grpc.health.v1.Health/Check` for the whole server: the no-op floor.
    HealthCheck,
    /// `tessera.v1.AuthorizationService/Check`.
    AuthorizationCheck,
}

impl Rpc {
    fn path(self) -> PathAndQuery {
        match self {
            Rpc::HealthCheck => PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
            Rpc::AuthorizationCheck => {
                PathAndQuery::from_static("/tessera.v1.AuthorizationService/Check")
            }
        }
    }

    fn decode(self, src: &mut DecodeBuf<'_>) -> Result<Answer, prost::DecodeError> {
        match self {
            Rpc::HealthCheck => {
                let verdict = HealthVerdict::decode(src)?;
                Ok(Answer {
                    expected: verdict.status == ServingStatus::Serving as i32,
                    code: verdict.status,
                })
            }
            Rpc::AuthorizationCheck => {
                let verdict = CheckVerdict::decode(src)?;
                Ok(Answer {
                    expected: verdict.allowed,
                    code: verdict.reason,
                })
            }
        }
    }

    /// An answer that was not the expected one, for the report (only built on that path).
    fn describe(self, code: i32) -> String {
        match self {
            Rpc::HealthCheck => format!(
                "health status {}",
                ServingStatus::try_from(code).map_or("unknown", |status| status.as_str_name())
            ),
            Rpc::AuthorizationCheck => format!(
                "denied: {}",
                DenyReason::try_from(code).map_or("unknown reason", |reason| reason.as_str_name())
            ),
        }
    }
}

/// The first fields of `grpc.health.v1.HealthCheckResponse`; decoding allocates nothing.
#[derive(Clone, PartialEq, Message)]
struct HealthVerdict {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// The verdict fields of `tessera.v1.CheckResponse`; the strings and lists it also carries are
/// skipped rather than allocated.
#[derive(Clone, PartialEq, Message)]
struct CheckVerdict {
    #[prost(bool, tag = "1")]
    allowed: bool,
    #[prost(int32, tag = "2")]
    reason: i32,
}

/// What a call answered, reduced to what the generator checks.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    expected: bool,
    /// The serving status or deny reason, to describe an unexpected answer.
    code: i32,
}

impl Answer {
    /// A Check's decision: `allowed`, or why not (the `DenyReason` number; for a health
    /// check, the serving status).
    pub fn decision(self) -> (bool, i32) {
        (self.expected, self.code)
    }
}

/// Why a call did not count as a good answer.
#[derive(Debug)]
pub enum Problem {
    /// The server answered, but not what the scenario expects (e.g. a Check denied).
    Unexpected(String),
    /// No answer: a gRPC error, a transport failure or a timeout.
    Failed(String),
}

/// A ready-to-send call: which RPC, and its request already encoded.
#[derive(Debug, Clone)]
pub struct Probe {
    rpc: Rpc,
    path: PathAndQuery,
    request: Bytes,
}

impl Probe {
    /// The health check of the whole server (empty service name), expecting `SERVING`.
    pub fn health() -> Self {
        let request = tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        };
        Self::new(Rpc::HealthCheck, request.encode_to_vec())
    }

    /// An authorization Check of `token` for `permission`, expecting `allowed`.
    pub fn check(token: &str, permission: &str, client_ip: &str) -> Self {
        let request = CheckRequest {
            token: token.to_owned(),
            permission: permission.to_owned(),
            client_ip: client_ip.to_owned(),
            ..CheckRequest::default()
        };
        Self::new(Rpc::AuthorizationCheck, request.encode_to_vec())
    }

    /// An authorization Check of exactly `request`, expecting `allowed`.
    pub fn check_request(request: &CheckRequest) -> Self {
        Self::new(Rpc::AuthorizationCheck, request.encode_to_vec())
    }

    /// The token a Check probe presents.
    #[cfg(test)]
    pub fn token(&self) -> Option<String> {
        (self.rpc == Rpc::AuthorizationCheck)
            .then(|| CheckRequest::decode(self.request.clone()).ok())
            .flatten()
            .map(|request| request.token)
    }

    fn new(rpc: Rpc, encoded: Vec<u8>) -> Self {
        Self {
            rpc,
            path: rpc.path(),
            request: Bytes::from(encoded),
        }
    }

    /// Sends the call once on `client`; Err describes a call without an answer (a gRPC error
    /// or a transport failure).
    pub async fn answer(&self, client: &mut Grpc<Channel>) -> Result<Answer, String> {
        client
            .ready()
            .await
            .map_err(|error| format!("channel not ready: {error}"))?;
        let response = client
            .unary(
                Request::new(self.request.clone()),
                self.path.clone(),
                RawCodec(self.rpc),
            )
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
        Ok(response.into_inner())
    }

    /// Sends the call once on `client` and checks its answer.
    pub async fn call(&self, client: &mut Grpc<Channel>) -> Result<(), Problem> {
        let answer = self.answer(client).await.map_err(Problem::Failed)?;
        if answer.expected {
            Ok(())
        } else {
            Err(Problem::Unexpected(self.rpc.describe(answer.code)))
        }
    }
}

/// Sends pre-encoded request bytes as they are; decodes the answer per [`Rpc`].
struct RawCodec(Rpc);

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Answer;
    type Encoder = BytesEncoder;
    type Decoder = AnswerDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        AnswerDecoder(self.0)
    }
}

struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

struct AnswerDecoder(Rpc);

impl Decoder for AnswerDecoder {
    type Item = Answer;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Answer>, Status> {
        self.0
            .decode(src)
            .map(Some)
            .map_err(|error| Status::internal(format!("undecodable answer: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera::proto::{CheckResponse, RateLimitStatus};
    use tonic_health::pb::HealthCheckResponse;

    #[test]
    fn the_check_verdict_reads_the_fields_of_the_real_check_response() {
        let response = CheckResponse {
            allowed: true,
            reason: DenyReason::Allowed as i32,
            http_status: 200,
            message: "ok".to_owned(),
            token_id: "tok_1".to_owned(),
            permissions: vec!["orders:*".to_owned()],
            rate_limit: Some(RateLimitStatus::default()),
            ..CheckResponse::default()
        };
        let verdict = CheckVerdict::decode(response.encode_to_vec().as_slice()).expect("decodable");
        assert!(verdict.allowed);
        assert_eq!(verdict.reason, DenyReason::Allowed as i32);

        let denied = CheckResponse {
            allowed: false,
            reason: DenyReason::RateLimited as i32,
            ..CheckResponse::default()
        };
        let verdict = CheckVerdict::decode(denied.encode_to_vec().as_slice()).expect("decodable");
        assert!(!verdict.allowed);
        assert_eq!(
            Rpc::AuthorizationCheck.describe(verdict.reason),
            "denied: DENY_REASON_RATE_LIMITED"
        );
    }

    #[test]
    fn the_health_verdict_reads_the_status_of_the_real_health_response() {
        let response = HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        };
        let verdict =
            HealthVerdict::decode(response.encode_to_vec().as_slice()).expect("decodable");
        assert_eq!(verdict.status, ServingStatus::Serving as i32);
    }

    #[test]
    fn probes_carry_their_request_encoded_once() {
        let probe = Probe::check("tsr_abc", "orders:read", "10.0.0.1");
        let decoded = CheckRequest::decode(probe.request.clone()).expect("decodable");
        assert_eq!(decoded.token, "tsr_abc");
        assert_eq!(decoded.permission, "orders:read");
        assert_eq!(decoded.client_ip, "10.0.0.1");
        assert!(Probe::health().request.is_empty());
    }
}
