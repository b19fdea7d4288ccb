//! Logs and traces: text or JSON logs behind one filter (never the h2/hyper trace firehose), and,
//! when a collector is configured, OpenTelemetry traces over OTLP/gRPC. Each gRPC call's span
//! continues the caller's trace (W3C `traceparent` metadata), see [`crate::app`]'s gate.

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Noisy transport crates stay at warn unless the filter names them explicitly.
const QUIET_DEPENDENCIES: &str = "h2=warn,hyper=warn,hyper_util=warn,tower=warn,sqlx=warn,\
                                  opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn";

/// The `service.name` of exported spans unless `OTEL_SERVICE_NAME` says otherwise.
const SERVICE_NAME: &str = "tessera";

/// How log lines are written (`TESSERA_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs and traces as the settings parsed them (`src/config/parse.rs`).
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `tracing` EnvFilter syntax, already checked by [`validate_filter`].
    pub log_filter: String,
    pub log_format: LogFormat,
    /// The OTLP/gRPC collector; None: no span is exported, and the gate creates its call spans
    /// at debug level only (`src/app/gate.rs`).
    pub otlp_endpoint: Option<url::Url>,
}

impl TelemetrySettings {
    /// Whether spans go to a collector.
    pub fn exports_spans(&self) -> bool {
        self.otlp_endpoint.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid setting TESSERA_LOG: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("cannot create the OTLP exporter for TESSERA_OTLP_ENDPOINT: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Keeps the trace pipeline alive; [`Telemetry::shutdown`] flushes the spans still buffered.
#[must_use = "dropping Telemetry without shutdown loses the last buffered spans"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still buffered and stops the exporter. Blocks, so it runs off the async
    /// workers.
    pub async fn shutdown(self) {
        let Some(provider) = self.tracer_provider else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot flush the last spans"),
            Err(error) => tracing::warn!(%error, "the span flush panicked"),
        }
    }
}

/// Installs the global subscriber for logs only; a second call (as in tests) is a no-op.
pub fn init(filter: &str, format: LogFormat) {
    let env_filter = env_filter(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(env_filter)
        .with(log_layer(format))
        .try_init();
}

/// Installs the global subscriber: logs, plus span export to the OTLP endpoint when there is
/// one. Must run inside the tokio runtime (the exporter's channel lives there). A second call is
/// a no-op.
pub fn init_with_traces(settings: &TelemetrySettings) -> Result<Telemetry, TelemetryError> {
    let format = settings.log_format;
    // One filter for the whole subscriber, not one per layer: a per-layer EnvFilter swallows
    // the next event on a thread after a dependency asks `enabled` for a disabled level (sqlx
    // does on every PostgreSQL query: tokio-rs/tracing#2519), which lost admin and store logs.
    let log_filter = env_filter(&settings.log_filter)?;
    let Some(endpoint) = &settings.otlp_endpoint else {
        let _ = tracing_subscriber::registry()
            .with(log_filter)
            .with(log_layer(format))
            .try_init();
        return Ok(Telemetry {
            tracer_provider: None,
        });
    };

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.as_str())
        .build()?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer(SERVICE_NAME);
    // Spans pass the same filter as logs, so the exported traces never carry the firehose either.
    let installed = tracing_subscriber::registry()
        .with(log_filter)
        .with(log_layer(format))
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init();
    if installed.is_err() {
        tracing::warn!("a tracing subscriber was already installed; spans are not exported");
    }
    tracing::info!(endpoint = %endpoint, "exporting traces over otlp");
    Ok(Telemetry {
        tracer_provider: Some(provider),
    })
}

/// The caller's trace context from gRPC metadata (`traceparent`, `tracestate`), to parent the
/// call's span; empty when the caller sent none or no propagator is installed.
pub fn remote_context(headers: &tonic::codegen::http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
}

struct HeaderExtractor<'a>(&'a tonic::codegen::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// Whether `filter` is valid `tracing` EnvFilter syntax, for settings validation.
pub fn validate_filter(filter: &str) -> Result<(), String> {
    env_filter(filter)
        .map(drop)
        .map_err(|error| error.to_string())
}

fn env_filter(filter: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    EnvFilter::try_new(format!("{QUIET_DEPENDENCIES},{filter}"))
}

fn log_layer<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    // Colour codes only for a terminal: in a file, a pipe or a log collector they are noise.
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_firehose_stays_quiet_whatever_the_configured_level() {
        let filter = env_filter("trace").expect("valid filter").to_string();
        assert!(filter.contains("h2=warn"), "{filter}");
        assert!(filter.contains("hyper=warn"), "{filter}");
    }

    #[test]
    fn an_invalid_log_filter_is_an_error_naming_the_setting() {
        let settings = TelemetrySettings {
            log_filter: "tessera=notalevel".to_owned(),
            log_format: LogFormat::Text,
            otlp_endpoint: None,
        };
        let error = init_with_traces(&settings).err().expect("invalid filter");
        assert!(error.to_string().contains("TESSERA_LOG"), "{error}");
    }
}
