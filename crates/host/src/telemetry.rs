//! Trace export (issue 15): where `mayfly up`, `mayfly serve` and a job's
//! coordinator send the spans that `mayfly_control::telemetry` records.
//! `MAYFLY_OTLP_ENDPOINT` over `[telemetry] otlp` of `mayfly.toml`; with
//! neither, nothing is started and the global tracer stays OpenTelemetry's
//! no-op.
//!
//! The exporter is the official OTLP one over HTTP with protobuf bodies
//! (`opentelemetry-otlp`, its blocking reqwest client on the batch
//! processor's own thread), posting to the endpoint's `/v1/traces`; spans
//! are batched and flushed by [`Telemetry::shutdown`] on a clean stop.

use anyhow::{Context as _, Result, anyhow};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Overrides `[telemetry] otlp`: the OTLP/HTTP collector's base URL.
pub const OTLP_ENDPOINT_ENV_VAR: &str = "MAYFLY_OTLP_ENDPOINT";

/// Where traces go, and where that was said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// The collector's base URL, checked; `None`: no export.
    pub otlp: Option<String>,
    /// `MAYFLY_OTLP_ENDPOINT`, or the file's `[telemetry] otlp`.
    pub origin: String,
    /// `[telemetry] object_keys`: how spans show object keys and item ids.
    pub object_keys: mayfly_spec::ObjectKeysInSpans,
}

impl TelemetrySettings {
    /// `MAYFLY_OTLP_ENDPOINT` (checked as the file's value is) over the
    /// file's `otlp`; `object_keys` from the file either way.
    pub fn resolve(file: mayfly_spec::TelemetrySpec, file_origin: String) -> Result<TelemetrySettings> {
        let object_keys = file.object_keys;
        match std::env::var(OTLP_ENDPOINT_ENV_VAR).ok().filter(|url| !url.trim().is_empty()) {
            Some(url) => {
                let otlp = mayfly_spec::check_otlp_endpoint(&url).map_err(|problem| {
                    anyhow!(
                        "{OTLP_ENDPOINT_ENV_VAR} {problem}; write the OTLP/HTTP collector's base URL, e.g. http://localhost:4318"
                    )
                })?;
                Ok(TelemetrySettings { otlp: Some(otlp), origin: OTLP_ENDPOINT_ENV_VAR.to_owned(), object_keys })
            }
            None => Ok(TelemetrySettings { otlp: file.otlp, origin: file_origin, object_keys }),
        }
    }
}

/// The installed trace pipeline; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: SdkTracerProvider,
    endpoint: String,
}

impl Telemetry {
    /// Install the global tracer provider exporting to `settings.otlp`, with
    /// `service.name` "mayfly" and the project's name; `None` (nothing
    /// started) without an endpoint.
    pub fn start(settings: &TelemetrySettings, project: &str) -> Result<Option<Telemetry>> {
        let Some(base) = &settings.otlp else { return Ok(None) };
        let endpoint = format!("{}/v1/traces", base.trim_end_matches('/'));
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .build()
            .with_context(|| format!("cannot set up the OTLP exporter for {endpoint} (from {})", settings.origin))?;
        let resource = Resource::builder()
            .with_service_name("mayfly")
            .with_attribute(KeyValue::new("mayfly.project", project.to_owned()))
            .with_attribute(KeyValue::new("service.instance.id", instance_id()))
            .build();
        let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing::info!(endpoint = %endpoint, origin = %settings.origin, "exporting traces over OTLP/HTTP");
        Ok(Some(Telemetry { provider, endpoint }))
    }

    /// Where spans are posted.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Export every finished span and stop. Blocks (the batch processor's
    /// thread posts what is left), so async callers run it on a blocking thread.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(endpoint = %self.endpoint, error = %error, "could not flush the last spans to the collector");
        }
    }
}

/// This process on this host, as `service.instance.id`.
fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), std::process::id())
}

/// Install the trace exporter `settings` name (if any) for this process —
/// `mayfly up`, `mayfly serve` or a coordinator — and decide how its spans
/// show object keys and item ids: by default as HMAC-SHA256 under a key the
/// state store derives for it (the same on every host that opens the store
/// with its keyring). A store that seals nothing has no secret to derive it
/// from: its spans leave keys out (a warning says so).
pub fn start_telemetry(
    settings: &TelemetrySettings,
    opened: &crate::project::OpenProject,
    project_name: &str,
) -> Result<Option<Telemetry>> {
    use mayfly_control::telemetry::{KEYS_IN_SPANS_KEY_PURPOSE, KeysInSpans, show_keys_in_spans};
    let Some(telemetry) = Telemetry::start(settings, project_name)? else { return Ok(None) };
    show_keys_in_spans(match settings.object_keys {
        mayfly_spec::ObjectKeysInSpans::Plain => KeysInSpans::Plain,
        mayfly_spec::ObjectKeysInSpans::Omit => KeysInSpans::Omitted,
        mayfly_spec::ObjectKeysInSpans::Hash => match opened.state.derived_key(KEYS_IN_SPANS_KEY_PURPOSE) {
            Ok(key) => KeysInSpans::Hashed(key),
            Err(error) => {
                tracing::warn!(error = %error, "spans leave object keys and item ids out: `[telemetry] object_keys = \"hash\"` needs a key the state store derives");
                KeysInSpans::Omitted
            }
        },
    });
    Ok(Some(telemetry))
}
