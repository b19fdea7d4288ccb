use prost::Message as _;
use tokio_stream::StreamExt as _;
use tonic_reflection::pb::{v1, v1alpha};

use crate::helpers::{TestApp, spawn_app};

async fn channel(app: &TestApp) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(app.grpc_url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connects")
}

const EXPECTED_SERVICES: &[&str] = &[
    "tessera.v1.AuthorizationService",
    "tessera.v1.TokenAdminService",
    "envoy.service.auth.v3.Authorization",
    "grpc.health.v1.Health",
];

#[tokio::test]
async fn reflection_v1_lists_tessera_envoy_and_health_services() {
    let app = spawn_app().await;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel(&app).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let answer = answers.next().await.expect("one answer").expect("ok");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(listed)) =
        answer.message_response
    else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = listed
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in EXPECTED_SERVICES {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing: {names:?}"
        );
    }
}

/// grpcurl 1.8 and Python's grpcio-reflection speak only v1alpha.
#[tokio::test]
async fn reflection_v1alpha_describes_envoys_check_with_its_imports() {
    let app = spawn_app().await;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(&app).await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "envoy.service.auth.v3.Authorization".to_owned(),
            ),
        ),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let answer = answers.next().await.expect("one answer").expect("ok");
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        answer.message_response
    else {
        panic!("not a file descriptor: {answer:?}");
    };
    let file = prost_types::FileDescriptorProto::decode(
        files
            .file_descriptor_proto
            .first()
            .expect("a file")
            .as_slice(),
    )
    .expect("a file descriptor");
    assert_eq!(file.name(), "envoy/service/auth/v3/external_auth.proto");
    let check = file
        .service
        .iter()
        .find(|service| service.name() == "Authorization")
        .and_then(|service| {
            service
                .method
                .iter()
                .find(|method| method.name() == "Check")
        })
        .expect("Authorization.Check is described");
    assert_eq!(check.input_type(), ".envoy.service.auth.v3.CheckRequest");
}
