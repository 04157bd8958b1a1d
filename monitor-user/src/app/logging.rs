//! Messages on stderr, as `--log-format` says: `text` (a timestamp, the level and the message,
//! for a person) or `json` (one JSON object a line, for a log shipper: `timestamp`, `level`,
//! `target`, `message` and, when the message has some, `fields`).
//!
//! Everything the process writes on stderr goes through here: the `log` records, the daemon's
//! `ready` line ([`status`]) and the last word of a failed command ([`fatal`]), so that in json
//! mode every line parses.

use std::{
    io::Write as _,
    sync::{OnceLock, PoisonError, RwLock},
    time::SystemTime,
};

use serde_json::{Map, Value};

/// How messages are written on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `[2026-11-30T09:00:00Z INFO ] message`, for a person.
    #[default]
    Text,
    /// One JSON object a line: timestamp, level, target, message, fields.
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// Sets up the `log` records: `filters` is an env_logger filter (`info`, `nhiscope=debug`...).
/// The filter can change later with [`set_level`]; the format cannot.
pub fn init(filters: &str, format: LogFormat) {
    let _ = FORMAT.set(format);
    let logger = LOGGER.get_or_init(|| Switch(RwLock::new(build(filters, format))));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(read(logger).filter());
    }
}

/// Puts `filters` in force from the next record on (a config reload changed `log_level:`).
pub fn set_level(filters: &str) {
    if let Some(logger) = LOGGER.get() {
        let next = build(filters, format());
        let level = next.filter();
        *logger.0.write().unwrap_or_else(PoisonError::into_inner) = next;
        log::set_max_level(level);
    }
}

/// The installed logger: env_logger's, swapped whole when the filter changes.
struct Switch(RwLock<env_logger::Logger>);

static LOGGER: OnceLock<Switch> = OnceLock::new();

fn read(s: &Switch) -> std::sync::RwLockReadGuard<'_, env_logger::Logger> {
    s.0.read().unwrap_or_else(PoisonError::into_inner)
}

impl log::Log for Switch {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        log::Log::enabled(&*read(self), metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        log::Log::log(&*read(self), record);
    }

    fn flush(&self) {
        log::Log::flush(&*read(self));
    }
}

fn build(filters: &str, format: LogFormat) -> env_logger::Logger {
    let mut b = env_logger::Builder::new();
    b.parse_filters(filters);
    match format {
        LogFormat::Text => {
            b.format_target(false);
        }
        LogFormat::Json => {
            b.format(|buf, record| {
                let mut fields = Map::new();
                let _ = record.key_values().visit(&mut Fields(&mut fields));
                writeln!(
                    buf,
                    "{}",
                    json_line(
                        SystemTime::now(),
                        record.level().as_str(),
                        record.target(),
                        &record.args().to_string(),
                        fields,
                    )
                )
            });
        }
    }
    b.build()
}

/// Checks a `--log-level` or `log_level:` value: a level (`off`, `error`, `warn`, `info`,
/// `debug`, `trace`) or env_logger directives `TARGET=LEVEL`, separated by commas
/// (`info,nhiscope::publish::store=debug`). A word that is no level is refused, where env_logger would
/// take it for a module name and silently log nothing else.
pub fn parse_level(s: &str) -> Result<String, String> {
    const LEVELS: &str = "off, error, warn, info, debug, trace";
    let level = |l: &str| l.trim().parse::<log::LevelFilter>().is_ok();
    let target = |t: &str| {
        !t.is_empty()
            && t.split("::")
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    };
    if s.trim().is_empty() {
        return Err(format!("the log level is empty: one of {LEVELS}"));
    }
    for part in s.split(',') {
        let ok = match part.split_once('=') {
            Some((t, l)) => target(t.trim()) && level(l),
            None => level(part),
        };
        if !ok {
            return Err(format!(
                "`{s}` is not a log level: one of {LEVELS}, or TARGET=LEVEL directives \
                 separated by commas (info,nhiscope::publish::store=debug)"
            ));
        }
    }
    Ok(s.trim().to_owned())
}

/// One log line as JSON (no newline).
pub fn json_line(
    at: SystemTime,
    level: &str,
    target: &str,
    message: &str,
    fields: Map<String, Value>,
) -> String {
    let mut o = Map::new();
    o.insert(
        "timestamp".into(),
        Value::String(humantime::format_rfc3339_micros(at).to_string()),
    );
    o.insert("level".into(), Value::String(level.to_owned()));
    o.insert("target".into(), Value::String(target.to_owned()));
    o.insert("message".into(), Value::String(message.to_owned()));
    if !fields.is_empty() {
        o.insert("fields".into(), Value::Object(fields));
    }
    Value::Object(o).to_string()
}

/// Collects a record's key-values as JSON values.
struct Fields<'a>(&'a mut Map<String, Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let v = if let Some(n) = value.to_u64() {
            Value::from(n)
        } else if let Some(n) = value.to_i64() {
            Value::from(n)
        } else if let Some(b) = value.to_bool() {
            Value::from(b)
        } else if let Some(f) = value.to_f64() {
            Value::from(f)
        } else {
            Value::String(value.to_string())
        };
        self.0.insert(key.as_str().to_owned(), v);
        Ok(())
    }
}

/// A line that is always printed, whatever the level: `nhiscope: MESSAGE` as text, an `INFO`
/// object with `fields` as JSON. The daemon's `ready` line is one.
pub fn status(message: &str, fields: &[(&str, Value)]) {
    line("INFO", &format!("nhiscope: {message}"), message, fields);
}

/// The error a command stops with: `nhiscope: error: MESSAGE` as text, an `ERROR` object as
/// JSON.
pub fn fatal(message: &str) {
    line(
        "ERROR",
        &format!("nhiscope: error: {message}"),
        message,
        &[],
    );
}

/// Like [`fatal`], the text line being `message` itself (it names its place already).
pub fn fatal_bare(message: &str) {
    line("ERROR", message, message, &[]);
}

fn line(level: &str, text: &str, message: &str, fields: &[(&str, Value)]) {
    let out = match format() {
        LogFormat::Text => text.to_owned(),
        LogFormat::Json => json_line(
            SystemTime::now(),
            level,
            "nhiscope",
            message,
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        ),
    };
    let _ = writeln!(std::io::stderr().lock(), "{out}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_the_level_target_message_and_fields() {
        let mut fields = Map::new();
        fields.insert("rows".into(), Value::from(3u64));
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_500_000);
        let line = json_line(
            at,
            "WARN",
            "nhiscope::publish::store",
            "say \"hi\"\nthere",
            fields,
        );
        assert!(!line.contains('\n'), "one line: {line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["timestamp"], "1970-01-01T00:00:01.500000Z");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "nhiscope::publish::store");
        assert_eq!(v["message"], "say \"hi\"\nthere");
        assert_eq!(v["fields"]["rows"], 3);
        let bare = json_line(at, "INFO", "t", "m", Map::new());
        let v: Value = serde_json::from_str(&bare).unwrap();
        assert!(v.get("fields").is_none(), "{bare}");
    }

    #[test]
    fn log_levels_are_levels_or_directives() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "info,nhiscope::publish::store=debug",
            "nhiscope=trace",
        ] {
            assert!(parse_level(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "inf",
            "nhiscope",
            "info,=debug",
            "a-b=info",
            "info,debug=loud",
        ] {
            let e = parse_level(bad).unwrap_err();
            assert!(e.contains("log level"), "{bad}: {e}");
        }
    }

    #[test]
    fn key_values_become_typed_fields() {
        let mut fields = Map::new();
        let kvs: &[(&str, log::kv::Value)] = &[
            ("n", log::kv::Value::from(7u64)),
            ("neg", log::kv::Value::from(-2i64)),
            ("ok", log::kv::Value::from(true)),
            ("url", log::kv::Value::from("https://ch:8443")),
        ];
        log::kv::Source::visit(kvs, &mut Fields(&mut fields)).unwrap();
        assert_eq!(fields["n"], 7);
        assert_eq!(fields["neg"], -2);
        assert_eq!(fields["ok"], true);
        assert_eq!(fields["url"], "https://ch:8443");
    }
}
