//! JSON log lines on stdout: `{"ts","level","msg","target",…fields,…span fields}`. The
//! request span carries `request_id`, so every line written while serving a request names it.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

struct JsonLines;

#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(key(field), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(key(field), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(key(field), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(key(field), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(key(field), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(key(field), value.into());
    }
}

fn key(field: &Field) -> String {
    match field.name() {
        "message" => "msg".to_owned(),
        other => other.to_owned(),
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut line = Map::new();
        let now = time::OffsetDateTime::now_utc();
        line.insert("ts".into(), now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default().into());
        line.insert("level".into(), event.metadata().level().as_str().to_ascii_lowercase().into());
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(msg) = fields.0.remove("msg") {
            line.insert("msg".into(), msg);
        }
        line.insert("target".into(), event.metadata().target().into());
        // Span fields (request_id, method, path) are recorded by the default formatter as
        // `key=value` text; parse them back into JSON fields.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(formatted) = ext.get::<FormattedFields<N>>() {
                    for pair in formatted.fields.split(' ') {
                        if let Some((k, v)) = pair.split_once('=') {
                            line.entry(k.to_owned()).or_insert_with(|| Value::String(v.trim_matches('"').to_owned()));
                        }
                    }
                }
            }
        }
        line.extend(fields.0);
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Lines every operator and script relies on (`listening`, `stopped`) whatever the filter.
pub const LIFECYCLE: &str = "conclave::lifecycle";

pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter)
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive(format!("{LIFECYCLE}=info").parse().expect("a valid directive"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // The span fields are formatted as text before they are read back as JSON: colour
        // codes (on whenever a dependency enables `ansi`) would end up inside the keys.
        .with_ansi(false)
        .event_format(JsonLines)
        .with_writer(std::io::stdout)
        .try_init();
}
