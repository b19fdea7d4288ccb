use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tessera::proto::CheckRequest;
use tessera::proto::authorization_service_client::AuthorizationServiceClient;
use tessera::proto::token_admin_service_client::TokenAdminServiceClient;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::helpers::ops::{ServingStatus, eventually, health_of};
use crate::helpers::process::ServeProcess;

/// An OTLP/gRPC collector that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans);
        self.spans.lock().expect("spans").extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_calls_span_continues_the_callers_trace_and_reaches_the_otlp_collector() {
    let collector = Collector::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let collector_address = listener.local_addr().expect("address");
    let serving = collector.clone();
    let collector_task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(serving))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
    });

    let endpoint = format!("http://{collector_address}");
    let server = ServeProcess::start(&[("TESSERA_OTLP_ENDPOINT", &endpoint)]).await;
    let url = server.grpc_url.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            health_of(&url, "").await == ServingStatus::Serving
        })
        .await
    );
    let mut request = tonic::Request::new(CheckRequest {
        token: "tsk_malformed".to_owned(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")
            .parse()
            .expect("ascii"),
    );
    AuthorizationServiceClient::connect(url.clone())
        .await
        .expect("connects")
        .check(request)
        .await
        .expect("check answers");

    // Shutdown flushes the spans still buffered.
    let (status, log) = server.terminate().await;
    assert_eq!(status.code(), Some(0), "{log:#?}");
    let spans = collector.spans.lock().expect("spans").clone();
    let check = spans
        .iter()
        .find(|span| span.name.ends_with("AuthorizationService/Check"))
        .unwrap_or_else(|| panic!("no Check span among {spans:#?}"));
    assert_eq!(
        hex::encode(&check.trace_id),
        TRACE_ID,
        "same trace as the caller"
    );
    assert_eq!(
        hex::encode(&check.parent_span_id),
        CALLER_SPAN_ID,
        "parented by the caller's span"
    );
    collector_task.abort();
}

#[tokio::test]
async fn an_empty_otlp_endpoint_exports_nothing_and_keeps_call_spans_out_of_the_log() {
    // Without export the gate's call span is created at debug level, which the `info` filter
    // leaves off (src/app/gate.rs): a log line written inside a call then names no span. An
    // empty TESSERA_OTLP_ENDPOINT is no endpoint (docs/architecture.md, Telemetry).
    let admin_key = "an-admin-key-of-sixteen-or-more";
    let server = ServeProcess::start(&[
        ("TESSERA_OTLP_ENDPOINT", ""),
        ("TESSERA_ADMIN_KEYS", admin_key),
    ])
    .await;
    let url = server.grpc_url.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            health_of(&url, "").await == ServingStatus::Serving
        })
        .await
    );
    let request = tessera::proto::UpsertPrincipalRequest {
        tenant: "acme".to_owned(),
        id: "alice".to_owned(),
        ..Default::default()
    };
    TokenAdminServiceClient::connect(url.clone())
        .await
        .expect("connects")
        .upsert_principal(crate::helpers::with_key(request, admin_key))
        .await
        .expect("principal upserted");

    let (status, log) = server.terminate().await;
    assert_eq!(status.code(), Some(0), "{log:#?}");
    let upserted = log
        .iter()
        .find(|line| line.contains("principal upserted"))
        .unwrap_or_else(|| panic!("the admin call logs: {log:#?}"));
    assert!(
        !upserted.contains("grpc call"),
        "no span is recorded without an exporter: {upserted}"
    );
    assert!(
        !log.iter().any(|line| line.contains("exporting traces")),
        "{log:#?}"
    );
}
