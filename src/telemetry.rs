//! Logging and tracing: JSON lines in production, readable text in a terminal, level from
//! `RUST_LOG`; spans exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Log lines are written by a thread of their own, which writes whatever has accumulated in
//! one system call: under a burst, one line per ticket would otherwise cost one `write` each.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::workflow::STEP_SPAN;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON when standard output is not a terminal, text otherwise.
    Auto,
    Json,
    Text,
}

/// Log lines waiting for the writer thread at most; past this, logging waits (no line is
/// dropped). The channel's slots are allocated up front: 32 KB.
const BUFFERED_LINES: usize = 1024;

/// Keeps the span exporter and the log writer alive; [`Telemetry::shutdown`] flushes both.
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    log_writer: WorkerGuard,
}

impl Telemetry {
    /// Exports the spans still buffered, then writes the last log lines. Without this the
    /// last spans and lines of a run are lost.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(error = %error, "failed to flush the last spans");
        }
        drop(self.log_writer);
    }
}

/// Whether spans are exported: the standard OpenTelemetry variables decide.
fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let (tracer_provider, exporter_error) = if otlp_configured() {
        match tracer_provider() {
            Ok(provider) => (Some(provider), None),
            Err(error) => (None, Some(error)),
        }
    } else {
        (None, None)
    };
    let otel = tracer_provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("deskhook")));
    // Whatever the writer thread finds queued goes out in one write; it flushes each batch.
    let stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    let (writer, log_writer) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("deskhook-log")
        .finish(stdout);
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    // Step spans are for traces: a log line already names its ticket through the workflow
    // span, and formatting eight span fields per ticket for lines rarely written is waste.
    let log_spans = filter_fn(|metadata| !(metadata.is_span() && metadata.name() == STEP_SPAN));
    let fmt = if json {
        fmt.json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed()
    } else {
        fmt.boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(fmt.with_filter(log_spans))
        .init();
    if let Some(error) = exporter_error {
        tracing::error!(error = %error, "failed to set up the OTLP span exporter; spans are not exported");
    }
    Telemetry {
        tracer_provider,
        log_writer,
    }
}

/// An OTLP/HTTP exporter configured by the standard `OTEL_EXPORTER_OTLP_*` variables.
fn tracer_provider() -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let resource = Resource::builder().with_service_name("deskhook").build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
