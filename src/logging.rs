//! Logging through `tracing`, written as logrus-compatible lines: the host decodes the agent's
//! stderr (vsock port 109) as a stream of logrus JSON objects.
//!
//! JSON lines carry `time` (RFC3339Nano, UTC), `level` (`trace|debug|info|warning|error`),
//! `msg` and every field of the event and of its enclosing spans, keys sorted as logrus does.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Whether the agent's log stream carries anything: off under `-initial-policy-stance deny`
/// until a policy allows `runtime_logging`, and off for good when the installed policy refuses
/// it (SP §2.1 step 5, §8), so that nothing about the workloads leaves the UVM that way.
static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns the log stream on or off (see [`ENABLED`]).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, std::sync::atomic::Ordering::SeqCst);
    crate::sys::set_crash_record(on);
}

/// Whether the log stream is on.
pub fn enabled() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Output format selected by `-log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A `tracing` layer that writes logrus-style lines to one writer.
pub struct LogrusLayer {
    format: LogFormat,
    out: Mutex<Box<dyn Write + Send>>,
}

impl fmt::Debug for LogrusLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogrusLayer")
            .field("format", &self.format)
            .finish()
    }
}

impl LogrusLayer {
    pub fn new(format: LogFormat, out: Box<dyn Write + Send>) -> Self {
        Self {
            format,
            out: Mutex::new(out),
        }
    }

    fn write_line(&self, line: &str) {
        // A poisoned lock only means another thread panicked mid-write; keep logging.
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // Nothing useful can be done if the log stream itself is gone.
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

/// Fields recorded on a span, kept in the span's extensions.
#[derive(Debug, Default)]
struct SpanFields(BTreeMap<String, Value>);

#[derive(Default)]
struct FieldCollector {
    fields: BTreeMap<String, Value>,
    message: Option<String>,
}

impl Visit for FieldCollector {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // Print the whole chain once, at the edge (the one place errors are logged).
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            let _ = write!(text, ": {s}");
            source = s.source();
        }
        self.put(field, Value::String(text));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

impl FieldCollector {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
}

/// logrus level names.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Parses a logrus level name (`-loglevel`). `fatal` and `panic` map to error, the most severe
/// level `tracing` has.
pub fn parse_level(name: &str) -> Option<Level> {
    match name.to_ascii_lowercase().as_str() {
        "panic" | "fatal" | "error" => Some(Level::ERROR),
        "warn" | "warning" => Some(Level::WARN),
        "info" => Some(Level::INFO),
        "debug" => Some(Level::DEBUG),
        "trace" => Some(Level::TRACE),
        _ => None,
    }
}

impl<S> Layer<S> for LogrusLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut collector = FieldCollector::default();
        attrs.record(&mut collector);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(collector.fields));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let mut collector = FieldCollector::default();
        values.record(&mut collector);
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(fields) = ext.get_mut::<SpanFields>() {
                fields.0.extend(collector.fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if !enabled() {
            return;
        }
        let mut fields = BTreeMap::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    fields.extend(f.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        let mut collector = FieldCollector::default();
        event.record(&mut collector);
        fields.extend(collector.fields);
        let msg = collector.message.unwrap_or_default();
        let level = level_name(*event.metadata().level());
        let line = match self.format {
            LogFormat::Json => json_line(&now_rfc3339_nano(), level, &msg, fields),
            LogFormat::Text => text_line(&now_rfc3339_nano(), level, &msg, &fields),
        };
        self.write_line(&line);
    }
}

/// One logrus JSON object. Fields named like the reserved keys are renamed `fields.<key>` as
/// logrus does.
pub fn json_line(time: &str, level: &str, msg: &str, fields: BTreeMap<String, Value>) -> String {
    let mut obj = serde_json::Map::new();
    for (k, v) in fields {
        let key = match k.as_str() {
            "time" | "level" | "msg" => format!("fields.{k}"),
            _ => k,
        };
        obj.insert(key, v);
    }
    obj.insert("level".into(), Value::String(level.into()));
    obj.insert("msg".into(), Value::String(msg.into()));
    obj.insert("time".into(), Value::String(time.into()));
    let mut line = Value::Object(obj).to_string();
    line.push('\n');
    line
}

/// One logrus text line: `time="…" level=info msg="…" key=value`.
pub fn text_line(time: &str, level: &str, msg: &str, fields: &BTreeMap<String, Value>) -> String {
    let mut line = format!("time={} level={} msg={}", quote(time), level, quote(msg));
    for (k, v) in fields {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let _ = write!(line, " {}={}", k, quote(&text));
    }
    line.push('\n');
    line
}

fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

/// The current time as Go's RFC3339Nano in UTC (fraction without trailing zeros).
pub fn now_rfc3339_nano() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_rfc3339_nano(d.as_secs(), d.subsec_nanos())
}

pub fn format_rfc3339_nano(secs: u64, nanos: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's civil-from-days algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_nano_formatting() {
        assert_eq!(format_rfc3339_nano(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339_nano(951_782_400, 500_000_000),
            "2000-02-29T00:00:00.5Z"
        );
        assert_eq!(
            format_rfc3339_nano(1_795_305_600 + 3661, 123_456_789),
            "2026-11-22T01:01:01.123456789Z"
        );
    }

    #[test]
    fn json_line_is_logrus_shaped() {
        let mut fields = BTreeMap::new();
        fields.insert("cid".to_string(), Value::from("abc"));
        fields.insert("msg".to_string(), Value::from(1));
        let line = json_line("T", "warning", "hello", fields);
        assert!(line.ends_with('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "warning");
        assert_eq!(v["msg"], "hello");
        assert_eq!(v["time"], "T");
        assert_eq!(v["cid"], "abc");
        assert_eq!(v["fields.msg"], 1);
    }

    #[test]
    fn text_line_quotes_when_needed() {
        let mut fields = BTreeMap::new();
        fields.insert("k".to_string(), Value::from("a b"));
        fields.insert("n".to_string(), Value::from(3));
        assert_eq!(
            text_line("T", "info", "GCS started", &fields),
            "time=T level=info msg=\"GCS started\" k=\"a b\" n=3\n"
        );
    }

    #[test]
    fn levels_parse_like_logrus() {
        assert_eq!(parse_level("debug"), Some(Level::DEBUG));
        assert_eq!(parse_level("Warning"), Some(Level::WARN));
        assert_eq!(parse_level("fatal"), Some(Level::ERROR));
        assert_eq!(parse_level("loud"), None);
    }
}
