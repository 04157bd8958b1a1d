//! The Grafana dashboards of `dashboards/`: every query of every panel and template variable,
//! with Grafana's macros and variables substituted the way the ClickHouse data source plugin
//! does, runs against the schema nhiscope creates, on Debian's ClickHouse 18.16 (the legacy
//! dashboard, rows written by the real store) and on ClickHouse 26.x through chdb (the current
//! dashboard, rows as the sink sends them), and the panels a responder reads first return the
//! rows that were inserted.
//!
//! A dashboard whose file name contains `clickhouse18` is for the legacy schema (servers before
//! 22.3); every other one is for current servers. The two must have the same panels and the
//! same SQL, except in the panels listed in [`DIALECT_SPECIFIC`].
//!
//! A dashboard whose `datasource` variable is of the `prometheus` plugin reads the daemon's
//! metrics (`--metrics`) instead: every metric any of its panels reads must be in a real
//! daemon's `/metrics`, and every query of its panels and variables must return data from a
//! real Prometheus server scraping that daemon.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nhiscope::{
    domain::event::{DriftKind, Event, Kind, OpenOp, Ts, Verdict},
    publish::store::{
        row::{AgentRow, EventRow, LossRow},
        schema::{Dialect, Schema, MIGRATIONS},
        sink::{Batch, Rows},
        Loss, Store, StoreConfig,
    },
};
use nhiscope_tests::{capture, chdb::Chdb, clickhouse::ClickHouse, temp_dir};
use serde_json::Value;

/// Panels whose SQL differs between the dialects (the agents' counters are a `Map` on current
/// servers, two arrays on 18.16).
const DIALECT_SPECIFIC: &[&str] = &["Agents heartbeat"];

const HOST: &str = "test-host";
const OTHER_HOST: &str = "other-host";
const NHI: &str = "billing-s3-writer";
const OTHER_NHI: &str = "deploy-bot";
const DRIFT_REASON: &str =
    "opened by /usr/bin/curl (uid 0), outside `readers` of billing-s3-writer";
const API_DRIFT_REASON: &str =
    "DELETE /billing/invoices on s3.eu-west-1.amazonaws.com:80 is outside the declared API";
const LOSS_CAUSE: &str = "ringbuf_full_open";
const LOST: u64 = 17;
/// `$__interval_s` as Grafana would pick it for the range.
const INTERVAL_S: u64 = 60;

/// One query of a dashboard: where it is (panel title or `variable <name>`) and its SQL.
struct DashQuery {
    place: String,
    sql: String,
}

struct Dashboard {
    path: PathBuf,
    dialect: Dialect,
    queries: Vec<DashQuery>,
}

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("dashboards")
}

/// Every `dashboards/*.json`, parsed.
fn dashboard_files() -> Vec<(PathBuf, Value)> {
    let dir = dashboards_dir();
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no dashboards in {}", dir.display());
    paths
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            (path, json)
        })
        .collect()
}

/// Whether a dashboard is over Prometheus (its `datasource` variable is of that plugin): those
/// are checked against a real daemon's metrics, the others are ClickHouse ones.
fn is_prometheus(dash: &Value) -> bool {
    dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| v["name"] == "datasource" && v["query"] == "prometheus")
}

/// Every ClickHouse dashboard of `dashboards/`, with its queries.
fn dashboards() -> Vec<Dashboard> {
    dashboard_files()
        .into_iter()
        .filter(|(_, json)| !is_prometheus(json))
        .map(|(path, json)| {
            let queries = collect_queries(&path, &json);
            let legacy = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains("clickhouse18"));
            Dashboard {
                path,
                dialect: if legacy {
                    Dialect::Legacy
                } else {
                    Dialect::Modern
                },
                queries,
            }
        })
        .collect()
}

/// The SQL of every panel (rows' nested panels too) and every query variable; panics when a
/// panel that shows data has no query, or a query is not on the `${datasource}` variable.
fn collect_queries(path: &Path, dash: &Value) -> Vec<DashQuery> {
    let file = path.display();
    let mut out = Vec::new();
    assert!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "{file}: schemaVersion {} is too old",
        dash["schemaVersion"]
    );
    let vars = dash["templating"]["list"]
        .as_array()
        .unwrap_or_else(|| panic!("{file}: no templating.list"));
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{file}: no template variable `{name}`"))
    };
    assert_eq!(var("datasource")["type"], "datasource", "{file}");
    assert_eq!(
        var("datasource")["query"],
        "grafana-clickhouse-datasource",
        "{file}"
    );
    for v in vars {
        if v["type"] != "query" {
            continue;
        }
        let name = v["name"].as_str().unwrap_or_default();
        assert_datasource(&format!("{file}: variable {name}"), &v["datasource"]);
        let sql = match &v["query"] {
            Value::String(s) => s.clone(),
            q => q["rawSql"].as_str().unwrap_or_default().to_owned(),
        };
        assert!(
            !sql.trim().is_empty(),
            "{file}: variable {name} has no query"
        );
        out.push(DashQuery {
            place: format!("variable {name}"),
            sql,
        });
    }
    for name in ["host", "nhi"] {
        assert_eq!(
            var(name)["type"],
            "query",
            "{file}: `{name}` is not a query variable"
        );
    }

    let mut panels: Vec<&Value> = Vec::new();
    for p in dash["panels"]
        .as_array()
        .unwrap_or_else(|| panic!("{file}: no panels"))
    {
        panels.push(p);
        if let Some(nested) = p["panels"].as_array() {
            panels.extend(nested);
        }
    }
    for p in panels {
        let ty = p["type"].as_str().unwrap_or_default();
        if matches!(ty, "row" | "text" | "dashlist" | "news") {
            continue;
        }
        let title = p["title"].as_str().unwrap_or_default().to_owned();
        assert!(!title.is_empty(), "{file}: a {ty} panel has no title");
        assert_datasource(&format!("{file}: panel {title:?}"), &p["datasource"]);
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "{file}: panel {title:?} has no query");
        for t in targets {
            let sql = t["rawSql"].as_str().unwrap_or_default();
            assert!(
                !sql.trim().is_empty(),
                "{file}: panel {title:?} has a target without rawSql: {t}"
            );
            if !t["datasource"].is_null() {
                assert_datasource(&format!("{file}: panel {title:?}"), &t["datasource"]);
            }
            out.push(DashQuery {
                place: title.clone(),
                sql: sql.to_owned(),
            });
        }
    }
    out
}

#[track_caller]
fn assert_datasource(place: &str, ds: &Value) {
    assert_eq!(
        ds["type"], "grafana-clickhouse-datasource",
        "{place}: wrong data source {ds}"
    );
    assert_eq!(
        ds["uid"], "${datasource}",
        "{place}: not on the ${{datasource}} variable"
    );
}

/// The time range of the dashboards' queries, in milliseconds (what Grafana sends).
struct Range {
    from_ms: u64,
    to_ms: u64,
}

/// `sql` with Grafana's variables and the ClickHouse plugin's macros replaced as they are at
/// query time: `${host:singlequote}` and `${nhi:singlequote}` by the test's values,
/// `$__fromTime`/`$__toTime` by `toDateTime(intDiv(<ms>,1000))`, `$__timeFilter(c)` by
/// `c >= toDateTime(..) AND c <= toDateTime(..)`, `$__timeInterval(c)` by
/// `toStartOfInterval(toDateTime(c), INTERVAL <s> second)`, `$__interval_s` by seconds. Anything
/// else starting with `$` is an error: it would reach ClickHouse unreplaced.
fn substitute(sql: &str, range: &Range) -> String {
    let from = format!("toDateTime(intDiv({},1000))", range.from_ms);
    let to = format!("toDateTime(intDiv({},1000))", range.to_ms);
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(braced) = rest.strip_prefix("${") {
            let end = braced
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {sql}"));
            let (name, format) = braced[..end]
                .split_once(':')
                .unwrap_or((&braced[..end], ""));
            out.push_str(&variable(name, format, sql));
            rest = &braced[end + 1..];
            continue;
        }
        let name_len = rest[1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len() - 1);
        let name = &rest[1..1 + name_len];
        rest = &rest[1 + name_len..];
        let arg = if rest.starts_with('(') {
            let end = rest
                .find(')')
                .unwrap_or_else(|| panic!("unclosed $__{name}( in {sql}"));
            let arg = rest[1..end].trim().to_owned();
            rest = &rest[end + 1..];
            Some(arg)
        } else {
            None
        };
        let text = match (name, arg) {
            ("__fromTime", None) => from.clone(),
            ("__toTime", None) => to.clone(),
            ("__interval_s", None) => INTERVAL_S.to_string(),
            ("__timeFilter", Some(c)) => format!("{c} >= {from} AND {c} <= {to}"),
            ("__timeInterval", Some(c)) => {
                format!("toStartOfInterval(toDateTime({c}), INTERVAL {INTERVAL_S} second)")
            }
            ("host" | "nhi", None) => variable(name, "", sql),
            (name, arg) => panic!("unknown macro or variable ${name} ({arg:?}) in:\n{sql}"),
        };
        out.push_str(&text);
    }
    out.push_str(rest);
    out
}

/// A template variable's value, formatted as `${name:format}` asks.
fn variable(name: &str, format: &str, sql: &str) -> String {
    let value = match name {
        "host" => HOST,
        "nhi" => NHI,
        _ => panic!("unknown variable ${{{name}}} in:\n{sql}"),
    };
    match format {
        "singlequote" => format!("'{value}'"),
        "" | "raw" => value.to_owned(),
        _ => panic!("unsupported format ${{{name}:{format}}} in:\n{sql}"),
    }
}

fn secs_ago(now: SystemTime, secs: u64) -> SystemTime {
    now - Duration::from_secs(secs)
}

fn rfc3339(t: SystemTime) -> Ts {
    Ts::from_system(t)
}

/// What both servers get: on the test host a drift open of [`NHI`], an ok open, an ok connect
/// and three requests (one ok, one `api_out_of_scope`, one `name_mismatch` too); on another host
/// a drift of another NHI (which the host filter must leave out).
fn events(now: SystemTime) -> Vec<Event> {
    let base = |kind, ago, host: &str| {
        let mut e = Event::new(kind, rfc3339(secs_ago(now, ago)), host.into());
        e.pid = 4242;
        e.tid = 4242;
        e.ppid = 1;
        e.uid = 1001;
        e.gid = 1001;
        e.exe = "/usr/local/bin/billing-worker".into();
        e.comm = "billing-worker".into();
        e.nhi = Some(NHI.into());
        e
    };
    let open = |ago, host: &str| {
        let mut e = base(Kind::Open, ago, host);
        e.syscall = Some(OpenOp::Openat);
        e.path = Some("/etc/billing/aws-credentials".into());
        e.flags = Some(0);
        e.result = Some(3);
        e
    };
    let mut drift = open(120, HOST);
    drift.pid = 31337;
    drift.exe = "/usr/bin/curl".into();
    drift.comm = "curl".into();
    drift.uid = 0;
    drift.verdict = Verdict::Drift;
    drift.drift = vec![DriftKind::ReaderOutOfScope];
    drift.reason = DRIFT_REASON.into();

    let ok = open(110, HOST);

    let mut connect = base(Kind::Connect, 100, HOST);
    connect.daddr = Some([52, 95, 1, 2].into());
    connect.dport = Some(443);
    connect.saddr = Some([10, 0, 0, 5].into());
    connect.sport = Some(40_000);
    connect.dns_names = Some(vec!["s3.eu-west-1.amazonaws.com".into()]);

    let mut elsewhere = open(90, OTHER_HOST);
    elsewhere.nhi = Some(OTHER_NHI.into());
    elsewhere.verdict = Verdict::Drift;
    elsewhere.drift = vec![DriftKind::Expired];
    elsewhere.reason = "used after it expired".into();
    // Requests (the first bytes of the holder's connections): one in scope, one to a path the
    // endpoint does not declare, one naming a server DNS never gave for the address.
    let request = |ago| {
        let mut e = base(Kind::Request, ago, HOST);
        e.daddr = connect.daddr;
        e.dport = Some(443);
        e.saddr = connect.saddr;
        e.sport = Some(40_001);
        e.dns_names = connect.dns_names.clone();
        e
    };
    let mut tls = request(95);
    tls.wire.sni = Some("s3.eu-west-1.amazonaws.com".into());
    tls.wire.alpn = Some(vec!["h2".into()]);
    tls.wire.tls_version = Some("1.3".into());
    let mut off_api = request(85);
    off_api.dport = Some(80);
    off_api.wire.http_method = Some("DELETE".into());
    off_api.wire.http_host = Some("s3.eu-west-1.amazonaws.com:80".into());
    off_api.wire.http_path = Some("/billing/invoices".into());
    off_api.verdict = Verdict::Drift;
    off_api.drift = vec![DriftKind::ApiOutOfScope];
    off_api.reason = API_DRIFT_REASON.into();
    let mut fronted = tls.clone();
    fronted.ts = rfc3339(secs_ago(now, 80));
    fronted.wire.sni = Some("api.github.com".into());
    fronted.verdict = Verdict::Drift;
    fronted.drift = vec![DriftKind::ApiOutOfScope, DriftKind::NameMismatch];
    fronted.reason = "the server name api.github.com is not among the names DNS gave".into();
    vec![drift, ok, connect, elsewhere, tls, off_api, fronted]
}

fn loss(now: SystemTime) -> Loss {
    Loss {
        start: secs_ago(now, 300),
        end: secs_ago(now, 240),
        count: LOST,
        cause: LOSS_CAUSE.into(),
        reason: format!("{LOST} open record(s) were lost in the kernel."),
    }
}

const COUNTERS: &[(&str, u64)] = &[
    ("records", 42),
    ("events", 4),
    ("filter_false_positives", 0),
];

/// Every query of `dash`, substituted, by place.
fn rendered(dash: &Dashboard, range: &Range) -> Vec<(String, String)> {
    dash.queries
        .iter()
        .map(|q| (q.place.clone(), substitute(&q.sql, range)))
        .collect()
}

/// The checks on what the panels return, the same for both servers.
fn check_results(file: &Path, results: &BTreeMap<String, Vec<Value>>) {
    let file = file.display();
    let get = |place: &str| {
        results
            .get(place)
            .unwrap_or_else(|| panic!("{file}: no panel or variable {place:?}"))
    };
    let shown = |place: &str| format!("{file}: {place}: {:#?}", get(place));

    let hosts = get("variable host");
    assert!(
        hosts.iter().any(|r| r["host"] == HOST),
        "{}",
        shown("variable host")
    );
    let nhis = get("variable nhi");
    assert!(
        nhis.iter().any(|r| r["nhi"] == NHI),
        "{}",
        shown("variable nhi")
    );

    let top = get("Top drifting NHIs");
    assert_eq!(top.len(), 1, "{}", shown("Top drifting NHIs"));
    assert_eq!(top[0]["nhi"], NHI, "{}", shown("Top drifting NHIs"));
    assert_eq!(top[0]["drifts"], 3, "{}", shown("Top drifting NHIs"));
    assert_eq!(
        top[0]["drift_kinds"],
        "api_out_of_scope, name_mismatch, reader_out_of_scope",
        "{}",
        shown("Top drifting NHIs")
    );
    assert!(
        top[0]["last_seen"].is_string(),
        "{}",
        shown("Top drifting NHIs")
    );

    let latest = get("Latest drift events");
    assert_eq!(latest.len(), 3, "{}", shown("Latest drift events"));
    // Newest first: the two requests, then the open.
    assert_eq!(latest[1]["path_or_endpoint"], "52.95.1.2:80");
    let d = &latest[2];
    assert_eq!(
        d["reason"],
        DRIFT_REASON,
        "{}",
        shown("Latest drift events")
    );
    assert_eq!(d["host"], HOST);
    assert_eq!(d["nhi"], NHI);
    assert_eq!(d["exe"], "/usr/bin/curl");
    assert_eq!(d["pid"], 31337);
    assert_eq!(d["path_or_endpoint"], "/etc/billing/aws-credentials");
    assert_eq!(d["drift_kinds"], "reader_out_of_scope");

    let over_time = get("Drift events over time by NHI");
    let total: u64 = over_time.iter().filter_map(|r| r["drifts"].as_u64()).sum();
    assert_eq!(total, 3, "{}", shown("Drift events over time by NHI"));

    let verdicts = get("Events by verdict");
    let count = |v: &str| -> u64 {
        verdicts
            .iter()
            .filter(|r| r["verdict"] == v)
            .filter_map(|r| r["events"].as_u64())
            .sum()
    };
    assert_eq!(
        // Opens and connects only: a request is part of its connection.
        (count("ok"), count("drift")),
        (2, 1),
        "{}",
        shown("Events by verdict")
    );

    // The APIs the NHI's holders used, each with its requests and drift.
    let apis = get("APIs per NHI");
    assert_eq!(apis.len(), 3, "{}", shown("APIs per NHI"));
    let api = |name: &str| {
        apis.iter()
            .find(|r| r["server_name"] == name)
            .unwrap_or_else(|| panic!("{}", shown("APIs per NHI")))
    };
    let s3 = apis
        .iter()
        .find(|r| r["server_name"] == "s3.eu-west-1.amazonaws.com" && r["method"] == "")
        .unwrap_or_else(|| panic!("{}", shown("APIs per NHI")));
    assert_eq!(
        (s3["requests"].as_u64(), s3["drifts"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(s3["dport"], 443);
    let fronted = api("api.github.com");
    assert_eq!(fronted["drift_kinds"], "api_out_of_scope, name_mismatch");
    let delete = apis
        .iter()
        .find(|r| r["method"] == "DELETE")
        .unwrap_or_else(|| panic!("{}", shown("APIs per NHI")));
    assert_eq!(
        delete["server_name"], "s3.eu-west-1.amazonaws.com",
        "the port is not the name"
    );
    assert_eq!(delete["path"], "/billing/invoices");
    assert_eq!(delete["drifts"], 1);

    let api_drift = get("API drift (api_out_of_scope, name_mismatch)");
    assert_eq!(
        api_drift.len(),
        2,
        "{}",
        shown("API drift (api_out_of_scope, name_mismatch)")
    );
    assert_eq!(api_drift[0]["server_name"], "api.github.com");
    assert_eq!(api_drift[0]["endpoint"], "52.95.1.2:443");
    assert_eq!(api_drift[1]["reason"], API_DRIFT_REASON);
    assert_eq!(api_drift[1]["method"], "DELETE");

    let gaps = get("Coverage gaps (lost events)");
    assert_eq!(gaps.len(), 1, "{}", shown("Coverage gaps (lost events)"));
    assert_eq!(gaps[0]["host"], HOST);
    assert_eq!(gaps[0]["lost_events"], LOST);
    assert_eq!(gaps[0]["loss_cause"], LOSS_CAUSE);
    assert_eq!(
        gaps[0]["gap_seconds"],
        60,
        "{}",
        shown("Coverage gaps (lost events)")
    );
    let lost: u64 = get("Lost events over time")
        .iter()
        .filter_map(|r| r["lost_events"].as_u64())
        .sum();
    assert_eq!(lost, LOST, "{}", shown("Lost events over time"));

    let agents = get("Agents heartbeat");
    assert_eq!(agents.len(), 1, "{}", shown("Agents heartbeat"));
    assert_eq!(agents[0]["host"], HOST);
    assert_eq!(agents[0]["records"], 42, "{}", shown("Agents heartbeat"));
    assert_eq!(agents[0]["events"], 4, "{}", shown("Agents heartbeat"));
    assert_eq!(
        agents[0]["store_errors"],
        0,
        "{}",
        shown("Agents heartbeat")
    );
    assert!(
        agents[0]["seconds_since_heartbeat"]
            .as_i64()
            .is_some_and(|s| (-5..120).contains(&s)),
        "{}",
        shown("Agents heartbeat")
    );
}

fn range_around(now: SystemTime) -> Range {
    let ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    Range {
        from_ms: ms - 3_600_000,
        to_ms: ms + 600_000,
    }
}

#[test]
fn every_dashboard_has_a_query_in_every_panel_and_the_dialects_agree() {
    let dashes = dashboards();
    let range = range_around(SystemTime::now());
    for d in &dashes {
        assert!(!d.queries.is_empty(), "{}: no queries", d.path.display());
        for (place, sql) in rendered(d, &range) {
            assert!(
                !sql.contains('$'),
                "{}: {place}: unreplaced macro in {sql}",
                d.path.display()
            );
        }
    }
    let modern: Vec<&Dashboard> = dashes
        .iter()
        .filter(|d| d.dialect == Dialect::Modern)
        .collect();
    assert!(!modern.is_empty(), "no dashboard for current servers");
    for legacy in dashes.iter().filter(|d| d.dialect == Dialect::Legacy) {
        let name = legacy
            .path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let twin_name = name.replace("-clickhouse18", "");
        let twin = modern
            .iter()
            .find(|d| {
                d.path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy() == twin_name)
            })
            .unwrap_or_else(|| panic!("{name} has no current-server twin {twin_name}"));
        let places = |d: &Dashboard| {
            d.queries
                .iter()
                .map(|q| q.place.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            places(legacy),
            places(twin),
            "{name} and {twin_name} have different panels"
        );
        for (l, m) in legacy.queries.iter().zip(&twin.queries) {
            if !DIALECT_SPECIFIC.contains(&l.place.as_str()) {
                assert_eq!(
                    l.sql, m.sql,
                    "{name} and {twin_name} differ in {:?}, which is not dialect-specific",
                    l.place
                );
            }
        }
    }
}

#[test]
fn substitution_replaces_every_macro_and_variable() {
    let range = Range {
        from_ms: 1_795_000_000_123,
        to_ms: 1_795_003_600_456,
    };
    assert_eq!(
        substitute(
            "SELECT $__timeInterval(ts) AS t FROM e WHERE $__timeFilter(ts) AND h IN \
             (${host:singlequote}) AND n = '$nhi' AND x >= $__fromTime AND i = $__interval_s",
            &range
        ),
        "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 60 second) AS t FROM e WHERE \
         ts >= toDateTime(intDiv(1795000000123,1000)) AND ts <= \
         toDateTime(intDiv(1795003600456,1000)) AND h IN ('test-host') AND \
         n = 'billing-s3-writer' AND x >= toDateTime(intDiv(1795000000123,1000)) AND i = 60"
    );
}

/// The legacy dashboards on a real 18.16 server, with rows the real store wrote.
#[test]
fn legacy_dashboards_run_on_clickhouse_18_16() {
    let dashes: Vec<Dashboard> = dashboards()
        .into_iter()
        .filter(|d| d.dialect == Dialect::Legacy)
        .collect();
    if dashes.is_empty() {
        return;
    }
    let Some(ch) = ClickHouse::start("dashboards") else {
        return;
    };
    let now = SystemTime::now();
    let mut config = StoreConfig::new(&ch.url()).unwrap_or_else(|e| panic!("{e}"));
    config.batch_interval = Duration::from_millis(100);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio: {e}"));
    rt.block_on(async {
        // Each host's rows come from its own store, as from its own daemon.
        for host in [HOST, OTHER_HOST] {
            let mut config = config.clone();
            config.spool_dir = temp_dir(&format!("dashboards-spool-{host}"));
            let store = Store::start(config, host).unwrap_or_else(|e| panic!("{e}"));
            let mine: Vec<Event> = events(now)
                .into_iter()
                .filter(|e| *e.host == *host)
                .collect();
            store.send(&mine);
            if host == HOST {
                store.record_loss(loss(now));
                store.heartbeat(COUNTERS);
            }
            store
                .shutdown()
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", ch.logs()));
        }
    });
    let range = range_around(now);
    for d in &dashes {
        let mut results = BTreeMap::new();
        for (place, sql) in rendered(d, &range) {
            // query_json panics with the SQL and ClickHouse's message.
            let rows = ch.query_json(&sql);
            results.insert(place, rows);
        }
        check_results(&d.path, &results);
    }
}

/// The current-server dashboards on ClickHouse 26.x (chdb), schema from the store's DDL and rows
/// as the sink sends them (RowBinary captured on the wire, loaded into chdb).
#[test]
fn current_dashboards_run_on_current_clickhouse() {
    let dashes: Vec<Dashboard> = dashboards()
        .into_iter()
        .filter(|d| d.dialect == Dialect::Modern)
        .collect();
    let Some(chdb) = Chdb::get() else { return };
    let dir = temp_dir("dashboards-chdb");
    let now = SystemTime::now();
    let s = Schema {
        database: "nhiscope".into(),
        cluster: None,
        retention_days: Some(30),
        dialect: Dialect::Modern,
    };
    let batches = modern_batches(now);
    let captured = capture::capture_inserts(&s, &batches);

    let mut stmts = vec!["SET output_format_json_quote_64bit_integers = 0".to_owned()];
    stmts.push(s.create_database());
    stmts.push(s.create_migrations_table());
    for m in MIGRATIONS {
        stmts.extend((m.statements)(&s));
    }
    for (i, (t, sql, body, token)) in captured.iter().enumerate() {
        let path = dir.join(format!("{i}-{}.rowbinary", t.name()));
        fs::write(&path, body).unwrap_or_else(|e| panic!("{e}"));
        stmts.push(capture::replay(&s, *t, sql, &path, token));
    }
    let range = range_around(now);
    for d in &dashes {
        let queries = rendered(d, &range);
        let first = stmts.len();
        let mut all = stmts.clone();
        all.extend(queries.iter().map(|(_, sql)| sql.clone()));
        let name = d.path.file_stem().unwrap_or_default().to_string_lossy();
        let out = chdb.run(&dir.join(name.as_ref()), &all);
        let results: BTreeMap<String, Vec<Value>> = queries
            .iter()
            .enumerate()
            .map(|(i, (place, _))| (place.clone(), out[first + i].clone()))
            .collect();
        check_results(&d.path, &results);
    }
}

/// The same rows the 18.16 test's stores write, as batches for the sink.
fn modern_batches(now: SystemTime) -> Vec<Batch> {
    let mut batches = Vec::new();
    for (run, host) in [(0x0da5_0001u64, HOST), (0x0da5_0002, OTHER_HOST)] {
        let rows: Vec<EventRow> = events(now)
            .iter()
            .filter(|e| *e.host == *host)
            .enumerate()
            .map(|(i, e)| EventRow::from_event(e, run, i as u64))
            .collect();
        batches.push(Batch::new(host, run, Rows::Events(rows)));
    }
    let run = 0x0da5_0001;
    let l = loss(now);
    batches.push(Batch::new(
        HOST,
        run,
        Rows::Losses(vec![LossRow {
            host: HOST.into(),
            run_id: run,
            seq: 0,
            start: Ts::from_system(l.start),
            end: Ts::from_system(l.end),
            count: l.count,
            cause: l.cause,
            reason: l.reason,
        }]),
    ));
    let mut counters: Vec<(String, u64)> = COUNTERS
        .iter()
        .map(|(n, v)| ((*n).to_owned(), *v))
        .collect();
    counters.extend(
        [
            "store_accepted",
            "store_inserted_rows",
            "store_spooled_rows",
            "store_spool_rows",
            "store_spool_bytes",
            "store_dropped_events",
            "store_errors",
        ]
        .map(|n| (n.to_owned(), 0)),
    );
    batches.push(Batch::new(
        HOST,
        run,
        Rows::Agents(vec![AgentRow {
            host: HOST.into(),
            run_id: run,
            seq: 1,
            ts: Ts::now(),
            started: Ts::from_system(secs_ago(now, 600)),
            version: "0.1.0".into(),
            counters,
        }]),
    ));
    batches
}

// The Prometheus dashboards: over the daemon's `--metrics`, checked against a real daemon's
// scrape and a real Prometheus server.

/// One PromQL query of a Prometheus dashboard: where it is and the expression.
struct PromQuery {
    place: String,
    expr: String,
}

/// Every panel's expressions and every variable's query (`label_values(SELECTOR, LABEL)`
/// becomes `count by (LABEL) (SELECTOR)`: what it lists is what that returns); panics when a
/// panel has no query or one is not on the `${datasource}` variable.
fn prometheus_queries(path: &Path, dash: &Value) -> Vec<PromQuery> {
    let file = path.display();
    assert!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "{file}: schemaVersion too old"
    );
    let on_variable = |place: &str, ds: &Value| {
        assert_eq!(
            ds["type"], "prometheus",
            "{file}: {place}: data source {ds}"
        );
        assert_eq!(ds["uid"], "${datasource}", "{file}: {place}: {ds}");
    };
    let mut out = Vec::new();
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let name = v["name"].as_str().unwrap_or_default();
        on_variable(&format!("variable {name}"), &v["datasource"]);
        let q = v["query"]["query"].as_str().unwrap_or_default();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{file}: variable {name}: not label_values(..): {q}"));
        let (selector, label) = inner
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("{file}: variable {name}: {q}"));
        out.push(PromQuery {
            place: format!("variable {name}"),
            expr: format!("count by ({}) ({selector})", label.trim()),
        });
    }
    let panels = dash["panels"].as_array().expect("panels");
    assert!(!panels.is_empty(), "{file}: no panels");
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        on_variable(title, &p["datasource"]);
        let targets = p["targets"].as_array().map_or(&[][..], Vec::as_slice);
        assert!(!targets.is_empty(), "{file}: panel {title} has no query");
        for t in targets {
            on_variable(title, &t["datasource"]);
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "{file}: panel {title}: empty query"
            );
            out.push(PromQuery {
                place: format!("panel {title}"),
                expr: expr.to_owned(),
            });
        }
    }
    out
}

/// `expr` as Grafana sends it with every variable at *All* (`.*`) and a rate interval that
/// holds a few of the test's one-second scrapes. Any other `$` is an error.
fn substitute_promql(expr: &str) -> String {
    let s = expr
        .replace("$__rate_interval", "5s")
        .replace("$instance", ".*")
        .replace("$nhi", ".*");
    assert!(!s.contains('$'), "unreplaced variable in {expr}");
    s
}

/// Every `nhiscope_*` metric name `expr` reads.
fn metric_names(expr: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("nhiscope_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        names.insert(name);
    }
    names
}

fn prometheus_dashboards() -> Vec<(PathBuf, Vec<PromQuery>)> {
    let dashes: Vec<_> = dashboard_files()
        .into_iter()
        .filter(|(_, json)| is_prometheus(json))
        .map(|(path, json)| {
            let q = prometheus_queries(&path, &json);
            (path, q)
        })
        .collect();
    assert!(!dashes.is_empty(), "no Prometheus dashboard");
    dashes
}

#[test]
fn prometheus_dashboards_query_on_their_variables_only() {
    for (path, queries) in prometheus_dashboards() {
        for q in &queries {
            let s = substitute_promql(&q.expr);
            assert!(
                !metric_names(&s).is_empty(),
                "{}: {}: reads no nhiscope metric: {s}",
                path.display(),
                q.place
            );
        }
    }
    assert_eq!(
        metric_names("sum(rate(nhiscope_events_total{a=\"nhiscope_x\"}[5s])) / nhiscope_up"),
        ["nhiscope_events_total", "nhiscope_up", "nhiscope_x"]
            .map(String::from)
            .into(),
    );
}

/// A real daemon (with a ClickHouse that is not there, so that the store's series exist too)
/// serves every metric any Prometheus panel reads, and every query of every panel and variable
/// returns data from a real Prometheus scraping it.
#[test]
fn every_metric_a_prometheus_panel_reads_is_served_and_every_query_returns_data() {
    if !nhiscope_tests::require_root_bpf() {
        return;
    }
    use nhiscope_tests::prometheus::{metrics_addr, sample_names, scrape, Prometheus};
    let dashes = prometheus_dashboards();
    let dir = temp_dir("dashboards-prometheus");
    let config = dir.join("clickhouse.yaml");
    fs::write(
        &config,
        format!(
            "url: http://127.0.0.1:{}\nspool_dir: {}\nbatch_interval: 100ms\n",
            nhiscope_tests::clickhouse::free_port(),
            dir.join("spool").display()
        ),
    )
    .expect("clickhouse config");
    let d = nhiscope_tests::Daemon::start_with(
        "nhis:\n  - id: svc\n    credentials: [/etc/nhiscope-dashboards-test/token]\n",
        &[
            "--metrics".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--clickhouse-config".as_ref(),
            config.as_os_str(),
        ],
    );
    let addr = metrics_addr(&d);
    // The store's numbers are copied within a second of the start.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let served = loop {
        let names = sample_names(&scrape(addr));
        if names.contains("nhiscope_clickhouse_up") || std::time::Instant::now() > deadline {
            break names;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for (path, queries) in &dashes {
        for q in queries {
            for name in metric_names(&q.expr) {
                assert!(
                    served.contains(&name),
                    "{}: {}: {name} is not in the daemon's /metrics ({served:?})",
                    path.display(),
                    q.place
                );
            }
        }
    }
    let Some(prom) = Prometheus::start(&[addr]) else {
        return;
    };
    for (path, queries) in &dashes {
        for q in queries {
            let expr = substitute_promql(&q.expr);
            let r = prom.wait_for(&expr, Duration::from_secs(60), |r| !r.is_empty());
            assert!(!r.is_empty(), "{}: {}: {expr}", path.display(), q.place);
        }
    }
    drop(prom);
    assert_eq!(d.stop().code(), Some(0));
}
