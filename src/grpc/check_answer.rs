//! Check's answer, encoded straight from the decision into the call's buffer.
//!
//! The generated `CheckResponse` is a tree of owned `String`s: building one copied the token id,
//! owner, tenant, message, every effective permission and every metadata entry out of the
//! cached credential, only for prost to copy them again into the buffer and then free them.
//! On the hot path that was about a dozen allocations and frees per Check (BENCHMARKS.md, "Check
//! at the floor"). [`CheckAnswer`] holds the decision, which shares the credential with the
//! cache, and writes the same protobuf fields from it in one pass: the bytes on the wire decode
//! to exactly the message [`convert::check_response`] builds (the tests below hold the two
//! together).
//!
//! tonic's generated server fixes each method's types, so [`AuthorizationServer`] answers
//! `Check` itself with [`CheckCodec`] and hands every other method to the generated server.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::bytes::BufMut;
use prost::encoding::{self, WireType};
use tonic::Status;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::{NamedService, UnaryService};
use tonic_prost::ProstDecoder;

use crate::authz::Decision;
use crate::grpc::authorization::AuthorizationApi;
use crate::grpc::codec::buffer_settings;
use crate::grpc::convert;
use crate::proto;
use crate::proto::authorization_service_server::AuthorizationServiceServer;

const CHECK_PATH: &str = "/tessera.v1.AuthorizationService/Check";

/// What Check answers: the decision and, when allowed, its report handle.
#[derive(Debug)]
pub struct CheckAnswer {
    decision: Decision,
    report_handle: Vec<u8>,
}

impl CheckAnswer {
    pub fn new(decision: Decision, report_handle: Vec<u8>) -> Self {
        Self {
            decision,
            report_handle,
        }
    }

    /// The same answer as the generated message, for callers that want one.
    pub fn into_message(self) -> proto::CheckResponse {
        let mut message = convert::check_response(&self.decision);
        message.report_handle = self.report_handle;
        message
    }

    /// The fields of `CheckResponse` in field order, each omitted when proto3 omits it (a
    /// zero, an empty string, an absent message or optional).
    fn encode(&self, buf: &mut impl BufMut) {
        let decision = &self.decision;
        let reason = convert::outcome_reason(decision.outcome);
        let credential = decision.credential.as_deref();
        if decision.is_allowed() {
            encoding::bool::encode(1, &true, buf);
        }
        // Enums are int32 on the wire: sign-extended, as prost writes them.
        varint_field(2, reason as i32 as u64, buf);
        varint_field(3, u64::from(decision.http_status()), buf);
        string_field(4, &decision.message, buf);
        if let Some(credential) = credential {
            string_field(5, credential.token_id.as_str(), buf);
            string_field(6, credential.owner_id.as_str(), buf);
            string_field(7, credential.tenant.as_str(), buf);
        }
        for grant in decision.permissions() {
            repeated_string(8, grant.as_str(), buf);
        }
        if let Some(status) = decision.rate_limit {
            encoding::message::encode(9, &convert::rate_limit(status), buf);
        }
        if let Some(credential) = credential {
            encoding::message::encode(10, &convert::timestamp(credential.expires_at), buf);
        }
        if !self.report_handle.is_empty() {
            encoding::bytes::encode(11, &self.report_handle, buf);
        }
        for missing in &decision.missing_permissions {
            repeated_string(12, missing, buf);
        }
        for (key, value) in decision.metadata().into_iter().flat_map(|m| m.iter()) {
            let entry_len = string_field_len(1, key) + string_field_len(2, value);
            encoding::encode_key(13, WireType::LengthDelimited, buf);
            encoding::encode_varint(entry_len as u64, buf);
            string_field(1, key, buf);
            string_field(2, value, buf);
        }
        if let Some(credits) = decision.credits_remaining {
            encoding::uint64::encode(14, &credits, buf);
        }
    }
}

fn varint_field(tag: u32, value: u64, buf: &mut impl BufMut) {
    if value != 0 {
        encoding::encode_key(tag, WireType::Varint, buf);
        encoding::encode_varint(value, buf);
    }
}

/// A singular string: omitted when empty.
fn string_field(tag: u32, value: &str, buf: &mut impl BufMut) {
    if !value.is_empty() {
        repeated_string(tag, value, buf);
    }
}

/// One element of a repeated string: always written, empty or not.
fn repeated_string(tag: u32, value: &str, buf: &mut impl BufMut) {
    encoding::encode_key(tag, WireType::LengthDelimited, buf);
    encoding::encode_varint(value.len() as u64, buf);
    buf.put_slice(value.as_bytes());
}

fn string_field_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        encoding::key_len(tag) + encoding::encoded_len_varint(value.len() as u64) + value.len()
    }
}

/// Check's codec: the generated request, decoded by prost; the answer, encoded by
/// [`CheckAnswer`]. Buffers as [`crate::grpc::codec::ProstCodec`] sizes them.
#[derive(Debug, Default, Clone, Copy)]
pub struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = CheckAnswer;
    type Decode = proto::CheckRequest;
    type Encoder = AnswerEncoder;
    type Decoder = ProstDecoder<proto::CheckRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        AnswerEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(buffer_settings())
    }
}

#[derive(Debug)]
pub struct AnswerEncoder;

impl Encoder for AnswerEncoder {
    type Item = CheckAnswer;
    type Error = Status;

    fn encode(&mut self, answer: CheckAnswer, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        answer.encode(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

/// `tessera.v1.AuthorizationService`: Check answered here, every other method by the generated
/// server, both over the one [`AuthorizationApi`].
#[derive(Clone)]
pub struct AuthorizationServer {
    api: Arc<AuthorizationApi>,
    generated: AuthorizationServiceServer<AuthorizationApi>,
    max_decoding_message_size: usize,
}

impl AuthorizationServer {
    pub fn new(api: AuthorizationApi, max_decoding_message_size: usize) -> Self {
        let api = Arc::new(api);
        Self {
            generated: AuthorizationServiceServer::from_arc(api.clone())
                .max_decoding_message_size(max_decoding_message_size),
            api,
            max_decoding_message_size,
        }
    }
}

impl NamedService for AuthorizationServer {
    const NAME: &'static str = <AuthorizationServiceServer<AuthorizationApi> as NamedService>::NAME;
}

impl Service<Request<Body>> for AuthorizationServer {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            return self.generated.call(request);
        }
        let method = CheckMethod(self.api.clone());
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(CheckCodec)
                .apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(method, request).await)
        })
    }
}

struct CheckMethod(Arc<AuthorizationApi>);

impl UnaryService<proto::CheckRequest> for CheckMethod {
    type Response = CheckAnswer;
    type Future = BoxFuture<tonic::Response<CheckAnswer>, Status>;

    fn call(&mut self, request: tonic::Request<proto::CheckRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.answer(request).await.map(tonic::Response::new) })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use prost::Message as _;

    use super::*;
    use crate::authz::RateLimitStatus;
    use crate::domain::decision::DenyReason;
    use crate::domain::fixtures;
    use crate::domain::metadata::Metadata;
    use crate::domain::permission::Grant;

    fn encoded(answer: &CheckAnswer) -> proto::CheckResponse {
        let mut bytes = Vec::new();
        answer.encode(&mut bytes);
        proto::CheckResponse::decode(bytes.as_slice()).expect("decodes as a CheckResponse")
    }

    fn credential(metadata: &[(&str, &str)]) -> Arc<crate::domain::decision::Credential> {
        let grants: Vec<Grant> = ["orders:read", "orders:write", "*"]
            .iter()
            .map(|raw| Grant::parse(raw).expect("grant"))
            .collect();
        let metadata = (!metadata.is_empty())
            .then(|| Arc::new(Metadata::parse(metadata.iter().copied()).expect("metadata")));
        Arc::new(crate::domain::decision::Credential {
            effective: grants.into(),
            metadata,
            ..fixtures::credential()
        })
    }

    fn decision(outcome: Result<(), DenyReason>) -> Decision {
        Decision {
            outcome,
            message: Cow::Borrowed(match outcome {
                Ok(()) => "allowed",
                Err(reason) => reason.message(),
            }),
            credential: None,
            rate_limit: None,
            missing_permissions: Vec::new(),
            credits_remaining: None,
        }
    }

    fn answers() -> Vec<CheckAnswer> {
        let mut answers = Vec::new();
        for outcome in std::iter::once(Ok(())).chain(DenyReason::ALL.map(Err)) {
            answers.push(CheckAnswer::new(decision(outcome), Vec::new()));
            let full = Decision {
                credential: Some(credential(&[
                    ("plan", "gold"),
                    ("empty", ""),
                    ("region", "zürich-ß"),
                ])),
                rate_limit: Some(RateLimitStatus {
                    limit: 600,
                    remaining: 0,
                    reset_seconds: 7,
                }),
                missing_permissions: vec!["orders:delete".to_owned(), String::new()],
                credits_remaining: Some(0),
                message: Cow::Owned(String::new()),
                ..decision(outcome)
            };
            answers.push(CheckAnswer::new(full, vec![1, 2, 3, 0]));
            let plain = Decision {
                credential: Some(credential(&[])),
                credits_remaining: Some(u64::MAX),
                ..decision(outcome)
            };
            answers.push(CheckAnswer::new(plain, Vec::new()));
        }
        answers
    }

    #[test]
    fn every_answer_decodes_to_the_message_the_generated_types_would_have_sent() {
        for answer in answers() {
            let on_the_wire = encoded(&answer);
            assert_eq!(on_the_wire, answer.into_message());
        }
    }

    #[test]
    fn an_allowed_answer_carries_the_identity_permissions_and_metadata_of_its_credential() {
        let allowed = Decision {
            credential: Some(credential(&[("plan", "gold")])),
            ..decision(Ok(()))
        };
        let answer = encoded(&CheckAnswer::new(allowed, b"handle".to_vec()));
        assert!(answer.allowed);
        assert_eq!(answer.reason, proto::DenyReason::Allowed as i32);
        assert_eq!(answer.http_status, 200);
        assert_eq!(answer.owner_id, "alice");
        assert_eq!(answer.tenant, "acme");
        assert_eq!(answer.permissions, ["orders:read", "orders:write", "*"]);
        assert_eq!(
            answer.metadata.get("plan").map(String::as_str),
            Some("gold")
        );
        assert_eq!(answer.report_handle, b"handle");
        assert!(answer.expires_at.is_some());
    }

    #[test]
    fn a_denied_answer_names_the_token_but_not_its_permissions_or_metadata() {
        let denied = Decision {
            credential: Some(credential(&[("plan", "gold")])),
            ..decision(Err(DenyReason::PermissionDenied))
        };
        let answer = encoded(&CheckAnswer::new(denied, Vec::new()));
        assert!(!answer.allowed);
        assert_eq!(answer.http_status, 403);
        assert_eq!(answer.owner_id, "alice");
        assert!(answer.permissions.is_empty());
        assert!(answer.metadata.is_empty());
    }
}
