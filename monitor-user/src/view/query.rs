//! `nhiscope query` and `nhiscope scope suggest`: the history in ClickHouse, for incident
//! responders. Every query is one of the shipped ones ([`QUERIES`], tested on 18.16 and on a
//! current server), read through the store's [`Reader`]; the flags fill its parameters, and a flag the query does not take is an
//! error rather than silently ignored.

use std::{
    io::{self, Write},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use thiserror::Error;

use crate::domain::text::unprintable;
use crate::{
    app::cli::{ClickHouseArgs, Format, QueryArgs, SuggestArgs},
    domain::registry,
    domain::scope::{self, Observed},
    publish::store::{
        read::{Param, Query, ReadError, Reader, QUERIES},
        StoreConfig,
    },
};

/// The default window.
const DEFAULT_SINCE: Duration = Duration::from_secs(86_400);
/// Clocks of the fleet a little ahead are still inside "now".
const CLOCK_SKEW: Duration = Duration::from_secs(3600);
/// Widest a table cell gets (the last column is never cut).
const MAX_CELL: usize = 48;

/// Why a query could not run.
#[derive(Debug, Error)]
pub enum QueryError {
    /// Bad flags or files: exit code 2.
    #[error("{0}")]
    Input(String),
    /// ClickHouse failed: exit code 1.
    #[error("{0}")]
    Failed(String),
    #[error("writing the output: {0}")]
    Output(#[from] io::Error),
}

impl QueryError {
    pub fn exit_code(&self) -> u8 {
        match self {
            QueryError::Input(_) => 2,
            _ => 1,
        }
    }
}

fn config(c: &ClickHouseArgs) -> Result<StoreConfig, QueryError> {
    StoreConfig::load(
        c.clickhouse_config.as_deref(),
        c.clickhouse.as_deref(),
        None,
        &|k| std::env::var(k).ok(),
    )
    .map_err(|e| QueryError::Input(e.to_string()))?
    .ok_or_else(|| {
        QueryError::Input(
            "no ClickHouse to read: give --clickhouse URL or --clickhouse-config FILE".to_owned(),
        )
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, QueryError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| QueryError::Failed(format!("cannot start the runtime: {e}")))
}

impl From<ReadError> for QueryError {
    fn from(e: ReadError) -> Self {
        QueryError::Failed(e.to_string())
    }
}

fn time_flag(flag: &str, text: &str) -> Result<SystemTime, QueryError> {
    humantime::parse_rfc3339_weak(text).map_err(|e| {
        QueryError::Input(format!(
            "{flag} {text}: not a time like 2026-11-23T09:00:00Z ({e})"
        ))
    })
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// `nhiscope query`.
pub fn run_query(a: QueryArgs, out: &mut dyn Write) -> Result<(), QueryError> {
    if a.name == "list" {
        for q in QUERIES {
            writeln!(out, "{:<22} {}", q.name, q.description)?;
            let flags: Vec<String> = q.params.iter().filter_map(|p| flag_of(p)).collect();
            let mut flags = flags;
            flags.dedup();
            writeln!(out, "{:<22} flags: {}", "", flags.join(" "))?;
        }
        return Ok(());
    }
    let query = QUERIES
        .iter()
        .copied()
        .find(|q| q.name == a.name)
        .ok_or_else(|| {
            QueryError::Input(format!(
                "no query named `{}`; `nhiscope query list` names them",
                a.name
            ))
        })?;
    let params = params(query, &a, SystemTime::now())?;
    let config = config(&a.clickhouse)?;
    let rt = runtime()?;
    rt.block_on(async {
        let mut reader = Reader::new(config);
        if query.returns_events {
            let events = reader.events(query, &params).await?;
            print_events(&events, a.format, out)
        } else {
            let (names, rows) = reader.table(query, &params).await?;
            print_table(&names, &rows, a.format, out)
        }
    })
}

/// The flag that fills a parameter.
fn flag_of(param: &str) -> Option<String> {
    match param {
        "nhi" => Some("--nhi ID".into()),
        "host" => Some("--host NAME".into()),
        "hosts" => Some("[--host NAME]...".into()),
        "from" => Some("[--since D | --from T]".into()),
        "to" => Some("[--to T]".into()),
        "limit" => Some("[--limit N]".into()),
        _ => None,
    }
}

/// The query's parameters from the flags; a flag it does not take is an error.
fn params(q: &Query, a: &QueryArgs, now: SystemTime) -> Result<Vec<Param>, QueryError> {
    let takes = |p: &str| q.params.contains(&p);
    let refuse = |flag: &str| {
        QueryError::Input(format!(
            "query {} does not take {flag} (it takes: {})",
            q.name,
            if q.params.is_empty() {
                "no flags".to_owned()
            } else {
                let mut v: Vec<&str> = q.params.to_vec();
                v.dedup();
                v.join(", ")
            }
        ))
    };
    if a.nhi.is_some() && !takes("nhi") {
        return Err(refuse("--nhi"));
    }
    if !a.hosts.is_empty() && !takes("host") && !takes("hosts") {
        return Err(refuse("--host"));
    }
    if (a.since.is_some() || a.from.is_some() || a.to.is_some()) && !takes("from") {
        return Err(refuse("a time range"));
    }
    let from = match (&a.from, a.since) {
        (Some(t), _) => time_flag("--from", t)?,
        (None, since) => now
            .checked_sub(since.unwrap_or(DEFAULT_SINCE))
            .unwrap_or(UNIX_EPOCH),
    };
    let to = match &a.to {
        Some(t) => time_flag("--to", t)?,
        None => now + CLOCK_SKEW,
    };
    if to <= from {
        return Err(QueryError::Input(
            "the time range is empty: --to is not after the start".to_owned(),
        ));
    }
    q.params
        .iter()
        .map(|p| match *p {
            "nhi" => a
                .nhi
                .as_deref()
                .map(Param::from)
                .ok_or_else(|| QueryError::Input(format!("query {} needs --nhi ID", q.name))),
            "host" => match a.hosts.as_slice() {
                [h] => Ok(Param::from(h.as_str())),
                [] => Err(QueryError::Input(format!(
                    "query {} needs --host NAME",
                    q.name
                ))),
                _ => Err(QueryError::Input(format!(
                    "query {} takes one --host",
                    q.name
                ))),
            },
            "hosts" => Ok(Param::Strs(a.hosts.clone())),
            "from" => Ok(Param::U64(secs(from))),
            "to" => Ok(Param::U64(secs(to))),
            "limit" => Ok(Param::U64(a.limit)),
            other => Err(QueryError::Input(format!(
                "query {} has a parameter `{other}` no flag fills",
                q.name
            ))),
        })
        .collect()
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// A value as text: strings as they are, anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A table cell: the characters of [`unprintable`] written as escapes (`\n`, `\t`, `\u{1b}`),
/// and backslashes doubled so that an escape cannot be forged.
fn printable(s: &str) -> String {
    if !s.chars().any(|c| unprintable(c) || c == '\\') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unprintable(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// At most `width` characters, `…` marking a cut.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Rows as aligned columns for a person; every cell goes through [`printable`].
fn aligned(names: &[String], rows: &[Vec<String>], out: &mut dyn Write) -> io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c)).collect())
        .collect();
    let names: Vec<String> = names.iter().map(|n| printable(n)).collect();
    let last = names.len().saturating_sub(1);
    let widths: Vec<usize> = (0..names.len())
        .map(|i| {
            let cells = rows
                .iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()));
            cells
                .chain([names[i].chars().count()])
                .max()
                .unwrap_or(0)
                .min(MAX_CELL)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                l.push_str(c);
            } else {
                let c = cut(c, widths[i]);
                l.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        l.trim_end().to_owned()
    };
    let header: Vec<String> = names.iter().map(|n| n.to_uppercase()).collect();
    writeln!(out, "{}", line(&header))?;
    for r in &rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(())
}

/// Summary rows, columns in the query's order.
pub fn print_table(
    names: &[String],
    rows: &[Vec<Value>],
    format: Format,
    out: &mut dyn Write,
) -> Result<(), QueryError> {
    match format {
        Format::Json => {
            for r in rows {
                let fields: Vec<String> = names
                    .iter()
                    .zip(r)
                    .map(|(n, v)| format!("{}:{v}", Value::String(n.clone())))
                    .collect();
                writeln!(out, "{{{}}}", fields.join(","))?;
            }
        }
        Format::Csv => {
            let header: Vec<String> = names.iter().map(|n| csv(n)).collect();
            writeln!(out, "{}", header.join(","))?;
            for r in rows {
                let cells: Vec<String> = r.iter().map(|v| csv(&text(v))).collect();
                writeln!(out, "{}", cells.join(","))?;
            }
        }
        Format::Table => {
            let cells: Vec<Vec<String>> =
                rows.iter().map(|r| r.iter().map(text).collect()).collect();
            aligned(names, &cells, out)?;
            if rows.is_empty() {
                writeln!(out, "(no rows)")?;
            }
        }
    }
    Ok(())
}

const EVENT_COLUMNS: [&str; 13] = [
    "ts", "host", "kind", "verdict", "nhi", "pid", "uid", "exe", "path", "daddr", "dport", "drift",
    "reason",
];

/// Events: JSON lines as the daemon writes them, CSV of the main fields, or a table.
pub fn print_events(
    events: &[crate::domain::event::Event],
    format: Format,
    out: &mut dyn Write,
) -> Result<(), QueryError> {
    let fields = |e: &crate::domain::event::Event| -> Vec<String> {
        vec![
            e.ts.to_rfc3339(),
            e.host.to_string(),
            e.kind.as_str().to_owned(),
            e.verdict.as_str().to_owned(),
            e.nhi.as_deref().unwrap_or_default().to_owned(),
            e.pid.to_string(),
            e.uid.to_string(),
            e.exe.to_string(),
            e.path.clone().unwrap_or_default(),
            e.daddr.map(|a| a.to_string()).unwrap_or_default(),
            e.dport.map(|p| p.to_string()).unwrap_or_default(),
            e.drift
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            e.reason.clone(),
        ]
    };
    match format {
        Format::Json => {
            // The line the daemon writes, as it writes it.
            let mut line = Vec::with_capacity(1024);
            for e in events {
                line.clear();
                e.write_json(&mut line);
                line.push(b'\n');
                out.write_all(&line)?;
            }
        }
        Format::Csv => {
            writeln!(out, "{}", EVENT_COLUMNS.join(","))?;
            for e in events {
                let cells: Vec<String> = fields(e).iter().map(|c| csv(c)).collect();
                writeln!(out, "{}", cells.join(","))?;
            }
        }
        Format::Table => {
            let names: Vec<String> = [
                "time", "host", "verdict", "kind", "nhi", "process", "target", "reason",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            let rows: Vec<Vec<String>> = events
                .iter()
                .map(|e| {
                    let f = fields(e);
                    let target = match (&e.daddr, e.dport, &e.path) {
                        (Some(a), Some(p), _) => format!("{a}:{p}"),
                        (_, _, Some(path)) => path.clone(),
                        _ => String::new(),
                    };
                    vec![
                        f[0].get(..19).unwrap_or(&f[0]).replace('T', " "),
                        f[1].clone(),
                        f[3].to_uppercase(),
                        f[2].clone(),
                        f[4].clone(),
                        format!("{}[{}]", e.exe, e.pid),
                        target,
                        e.reason.clone(),
                    ]
                })
                .collect();
            aligned(&names, &rows, out)?;
            if events.is_empty() {
                writeln!(out, "(no events)")?;
            }
        }
    }
    Ok(())
}

/// `nhiscope scope suggest`.
pub fn run_suggest(a: SuggestArgs, out: &mut dyn Write) -> Result<(), QueryError> {
    let declared = match &a.registry {
        Some(path) => {
            let r = registry::load(path).map_err(|e| QueryError::Input(e.to_string()))?;
            let nhi = r.nhi(&a.nhi).cloned().ok_or_else(|| {
                QueryError::Input(format!(
                    "{}: no NHI `{}` in this registry",
                    path.display(),
                    a.nhi
                ))
            })?;
            Some(nhi)
        }
        None => None,
    };
    let config = config(&a.clickhouse)?;
    let now = SystemTime::now();
    let from = now.checked_sub(a.since).unwrap_or(UNIX_EPOCH);
    let rt = runtime()?;
    let rows =
        rt.block_on(Reader::new(config).scope_uses(&a.nhi, from, now + CLOCK_SKEW, &a.hosts))?;
    let observed = Observed::from_records(&rows);
    let text = scope::suggest(
        &a.nhi,
        &observed,
        declared.as_ref(),
        &scope::window_text(from, now),
    );
    out.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{Event, Kind, Ts};

    /// An event whose strings carry what a hostile process or host can put in them.
    fn hostile() -> Event {
        let mut e = Event::new(
            Kind::Open,
            Ts::parse_rfc3339("2026-01-02T03:04:05.000000006Z").unwrap(),
            "h".into(),
        );
        e.exe = "/x\n2026 h OK\x1b[2J\u{202e}fdp".into();
        e.path = Some("/home/u/.aws/credentials\r\x07".into());
        e.reason = "opened\tit \\n".into();
        e
    }

    fn out(f: impl FnOnce(&mut Vec<u8>) -> Result<(), QueryError>) -> String {
        let mut v = Vec::new();
        f(&mut v).expect("printed");
        String::from_utf8(v).expect("utf8")
    }

    #[test]
    fn tables_escape_control_characters() {
        let t = out(|o| print_events(&[hostile()], Format::Table, o));
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(!t.chars().any(|c| unprintable(c) && c != '\n'), "{t:?}");
        assert!(t.contains("/x\\n2026 h OK"), "{t}");
        assert!(t.contains("\\u{1b}[2J\\u{202e}fdp"), "{t}");
        // A backslash is doubled: `\\n` in a name cannot pass for an escaped line break.
        assert!(t.contains("opened\\tit \\\\n"), "{t}");
        let t = out(|o| {
            print_table(
                &["exe\x1b".into()],
                &[vec![Value::String("a\nb".into())]],
                Format::Table,
                o,
            )
        });
        assert_eq!(t, "EXE\\U{1B}\na\\nb\n");
    }

    #[test]
    fn json_and_csv_stay_exact() {
        let e = hostile();
        let j = out(|o| print_events(std::slice::from_ref(&e), Format::Json, o));
        let back: Value = serde_json::from_str(j.trim_end()).expect("json");
        assert_eq!(back["exe"].as_str(), Some(e.exe.as_str()));
        assert_eq!(back["path"].as_str(), e.path.as_deref());
        let c = out(|o| print_events(std::slice::from_ref(&e), Format::Csv, o));
        assert!(c.contains(&format!("\"{}\"", e.exe)), "{c:?}");
    }
}
