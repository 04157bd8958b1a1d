//! The store on a current ClickHouse engine (chdb-core, ClickHouse 26.x in-process): the
//! modern DDL, every shipped query, retention changes, and the exact RowBinary bytes the sink
//! sends, captured on the wire and loaded with `file(..., RowBinary, 'structure')`.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::time::Duration;

use nhiscope::{
    domain::event::{DriftKind, Event, Kind, OpenOp, Ts, Verdict},
    publish::store::{
        migrate,
        queries::{self, EventRecord, Param},
        row::{AgentRow, EventRow, LossRow},
        schema::{Dialect, Schema, Table, MIGRATIONS},
        sink::{Batch, Rows},
    },
};
use nhiscope_tests::{capture, chdb::Chdb, temp_dir};
use serde_json::Value;

const RUN: u64 = 0x5eed;

/// A day before now, in whole seconds: the rows stay inside the 30-day TTL the tables get,
/// whenever the tests run.
fn t0() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        - 86_400
}

fn events() -> Vec<Event> {
    let t0 = t0();
    (0..60u64)
        .map(|i| {
            let t = std::time::UNIX_EPOCH + Duration::new(t0 + i * 7, (i as u32) * 13_579 + 1);
            let kind = [
                Kind::Open,
                Kind::Connect,
                Kind::Exec,
                Kind::Exit,
                Kind::Loss,
            ][i as usize % 5];
            let mut e = Event::new(kind, Ts::from_system(t), "h1".into());
            e.pid = 1000 + i as u32;
            e.tid = e.pid;
            e.ppid = 1;
            e.uid = 1001;
            e.gid = 1001;
            e.exe = "/usr/local/bin/billing-worker".into();
            e.comm = "billing-worker".into();
            e.cmdline = vec![
                "billing-worker".into(),
                format!("--n={i}"),
                "ünïcode 'quoted'".into(),
            ]
            .into();
            e.cgroup_id = 77;
            match kind {
                Kind::Open => {
                    e.syscall = Some(OpenOp::Openat2);
                    e.path = Some("/etc/billing/aws-credentials".into());
                    e.path_arg = Some("../billing/aws-credentials".into());
                    e.target = Some("/srv/secrets/aws".into());
                    e.flags = Some(0);
                    e.result = Some(if i % 2 == 0 { 5 } else { -2 });
                    e.error = (i % 2 == 1).then(|| "ENOENT".into());
                    e.nhi = Some("billing-s3-writer".into());
                    e.verdict = Verdict::Drift;
                    e.drift = vec![DriftKind::StaleCredential];
                    e.reason = "the credential file is 40 days old".into();
                }
                Kind::Connect => {
                    e.daddr = Some(
                        if i % 2 == 0 {
                            "52.95.1.2"
                        } else {
                            "2a05:d018::1"
                        }
                        .parse()
                        .expect("address"),
                    );
                    e.dport = Some(443);
                    e.saddr = Some([10, 0, 0, 5].into());
                    e.sport = Some(0);
                    e.dns_names = Some(vec!["s3.eu-west-1.amazonaws.com".into()]);
                    e.nhi = Some("billing-s3-writer".into());
                    e.container = Some("c0ffee".into());
                }
                Kind::Loss => {
                    e.count = Some(i);
                    e.cause = Some("ringbuf_full_open".into());
                    e.reason = format!("{i} open record(s) were lost in the kernel.");
                }
                Kind::Exec => e.verdict = Verdict::Unregistered,
                _ => {}
            }
            e
        })
        .chain((60..72u64).map(request))
        .collect()
}

/// A request event after the 60 others: TLS (even `i`) or plaintext HTTP, some drifting.
fn request(i: u64) -> Event {
    let t = std::time::UNIX_EPOCH + Duration::new(t0() + i * 7, (i as u32) * 13_579 + 1);
    let mut e = Event::new(Kind::Request, Ts::from_system(t), "h1".into());
    e.pid = 1000 + i as u32;
    e.tid = e.pid;
    e.uid = 1001;
    e.exe = "/usr/local/bin/billing-worker".into();
    e.comm = "billing-worker".into();
    e.proto = Some(nhiscope::domain::event::Proto::Tcp);
    e.daddr = Some("52.95.1.2".parse().expect("address"));
    e.saddr = Some([10, 0, 0, 5].into());
    e.sport = Some(40_000);
    e.dns_names = Some(if i.is_multiple_of(5) {
        vec![]
    } else {
        vec!["s3.eu-west-1.amazonaws.com".into()]
    });
    e.nhi = Some("billing-s3-writer".into());
    if i.is_multiple_of(2) {
        e.dport = Some(443);
        let fronted = i.is_multiple_of(4);
        e.wire.sni = Some(
            if fronted {
                "api.github.com"
            } else {
                "s3.eu-west-1.amazonaws.com"
            }
            .into(),
        );
        e.wire.alpn = (!i.is_multiple_of(3)).then(|| vec!["h2".into(), "http/1.1".into()]);
        e.wire.tls_version = Some("1.3".into());
        if fronted {
            e.verdict = Verdict::Drift;
            e.drift = vec![DriftKind::ApiOutOfScope, DriftKind::NameMismatch];
        }
    } else {
        e.dport = Some(80);
        let delete = i.is_multiple_of(3);
        e.wire.http_method = Some(if delete { "DELETE" } else { "PUT" }.into());
        e.wire.http_host = Some("s3.eu-west-1.amazonaws.com:80".into());
        e.wire.http_path = Some(format!("/uploads/u-{i}.csv"));
        if delete {
            e.verdict = Verdict::Drift;
            e.drift = vec![DriftKind::ApiOutOfScope];
        }
    }
    if e.verdict == Verdict::Drift {
        e.reason = "a request outside the declared API".into();
    }
    e
}

fn schema(retention_days: Option<u32>) -> Schema {
    Schema {
        database: "nhiscope".into(),
        cluster: None,
        retention_days,
        dialect: Dialect::Modern,
    }
}

/// The DDL a fresh current server gets, as the store would run it.
fn ddl(s: &Schema) -> Vec<String> {
    let mut out = vec![s.create_database(), s.create_migrations_table()];
    for m in MIGRATIONS {
        out.extend((m.statements)(s));
    }
    out
}

fn rows_of(out: &[Vec<Value>], i: usize) -> &[Value] {
    &out[i]
}

#[test]
fn the_modern_schema_queries_and_sink_bytes_work_on_current_clickhouse() {
    let Some(chdb) = Chdb::get() else { return };
    let dir = temp_dir("chdb-modern");
    let s = schema(Some(30));
    let sent = events();
    let event_rows: Vec<EventRow> = sent
        .iter()
        .enumerate()
        .map(|(i, e)| EventRow::from_event(e, RUN, i as u64))
        .collect();
    let loss = LossRow {
        host: "h1".into(),
        run_id: RUN,
        seq: 0,
        start: Ts {
            secs: t0(),
            nanos: 5,
        },
        end: Ts {
            secs: t0() + 100,
            nanos: 999_999_999,
        },
        count: 1234,
        cause: "spool_full".into(),
        reason: "1234 events were dropped".into(),
    };
    let agent = AgentRow {
        host: "h1".into(),
        run_id: RUN,
        seq: 1,
        ts: Ts {
            secs: t0() + 200,
            nanos: 0,
        },
        started: Ts {
            secs: t0(),
            nanos: 0,
        },
        version: "0.1.0".into(),
        counters: vec![("records".into(), 60), ("store_errors".into(), 0)],
    };
    let batches = vec![
        Batch::new("h1", RUN, Rows::Events(event_rows.clone())),
        Batch::new("h1", RUN, Rows::Losses(vec![loss])),
        Batch::new("h1", RUN, Rows::Agents(vec![agent])),
    ];
    let captured = capture::capture_inserts(&schema(Some(30)), &batches);

    let mut stmts = vec!["SET output_format_json_quote_64bit_integers = 0".to_owned()];
    stmts.extend(ddl(&s));
    let mut events_insert = String::new();
    for (t, sql, body, token) in &captured {
        assert!(!token.is_empty(), "no dedup token sent for {t:?}");
        let path = dir.join(format!("{}.rowbinary", t.name()));
        std::fs::write(&path, body).unwrap_or_else(|e| panic!("{e}"));
        let insert = capture::replay(&s, *t, sql, &path, token);
        if *t == Table::Events {
            events_insert = insert.clone();
        }
        stmts.push(insert);
    }
    // The same batch again with its token: the server drops it.
    stmts.push(events_insert);
    let first_query = stmts.len();
    let (from, to) = (Param::U64(1_700_000_000), Param::U64(1_900_000_000));
    for q in queries::ALL {
        let params: Vec<Param> = q
            .params
            .iter()
            .map(|p| match *p {
                "nhi" => Param::from("billing-s3-writer"),
                "host" => Param::from("h1"),
                "hosts" => Param::Strs(vec!["h1".into()]),
                "from" => from.clone(),
                "to" => to.clone(),
                "limit" => Param::U64(1000),
                other => panic!("no test value for parameter {other}"),
            })
            .collect();
        stmts.push(q.render(Dialect::Modern, "nhiscope", &params));
    }
    let checks = stmts.len();
    stmts.push("SELECT count() AS n FROM nhiscope.events".into());
    stmts.push(
        "SELECT name, engine_full FROM system.tables WHERE database = 'nhiscope' ORDER BY name"
            .into(),
    );
    let out = chdb.run(&dir, &stmts);

    // Every event came back exactly, through the shipped query.
    let by_host = rows_of(&out, first_query + 1);
    let back: Vec<Event> = by_host
        .iter()
        .map(|v| {
            let r: EventRecord =
                serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"));
            r.into_row()
                .unwrap_or_else(|| panic!("unreadable {v}"))
                .event
        })
        .collect();
    assert_eq!(back, sent);
    assert_eq!(
        rows_of(&out, checks)[0]["n"],
        sent.len(),
        "the repeated batch was stored twice"
    );

    let result = |name: &str| {
        let i = queries::ALL
            .iter()
            .position(|q| q.name == name)
            .unwrap_or(usize::MAX);
        rows_of(&out, first_query + i)
    };
    let requests: Vec<&Event> = sent.iter().filter(|e| e.kind == Kind::Request).collect();
    let request_drifts = requests
        .iter()
        .filter(|e| e.verdict == Verdict::Drift)
        .count();
    assert_eq!((requests.len(), request_drifts), (12, 5));
    assert_eq!(result("events_by_nhi").len(), 24 + 12);
    assert_eq!(
        result("drift").len(),
        12 + 12 + request_drifts,
        "12 drifts of opens, 12 unregistered, and the requests' drifts"
    );
    assert_eq!(result("drift_kinds")[0]["kind"], "stale_credential");
    assert_eq!(result("losses_by_host")[0]["lost"], 1234);
    assert_eq!(result("agents")[0]["counter_names"][0], "records");
    assert_eq!(result("agents")[0]["counter_values"][0], 60);
    assert_eq!(result("nhi_summary")[0]["events"], 24 + 12);
    // The APIs: server names (the HTTP `Host` without its port), methods, paths, drift.
    let apis = result("apis");
    assert_eq!(
        apis.iter()
            .map(|r| r["n"].as_u64().unwrap_or(0))
            .sum::<u64>(),
        12,
        "{apis:?}"
    );
    let fronted = apis
        .iter()
        .find(|r| r["server_name"] == "api.github.com")
        .unwrap_or_else(|| panic!("{apis:?}"));
    assert_eq!(fronted["n"], 3);
    assert_eq!(fronted["drifts"], 3);
    assert_eq!(
        fronted["drift"],
        serde_json::json!(["api_out_of_scope", "name_mismatch"])
    );
    let delete = apis
        .iter()
        .find(|r| r["method"] == "DELETE")
        .unwrap_or_else(|| panic!("{apis:?}"));
    assert_eq!(delete["server_name"], "s3.eu-west-1.amazonaws.com");
    assert_eq!(delete["dport"], 80);
    assert!(delete["path"]
        .as_str()
        .is_some_and(|p| p.starts_with("/uploads/u-")));
    // The dashboard's history: uses of NHIs and of unregistered credentials, each counted.
    let uses = sent
        .iter()
        .filter(|e| matches!(e.kind, Kind::Open | Kind::Connect))
        .filter(|e| e.nhi.is_some() || e.verdict == Verdict::Unregistered)
        .count() as u64;
    let sum = |name: &str| -> u64 {
        result(name)
            .iter()
            .map(|r| r["n"].as_u64().unwrap_or(0))
            .sum()
    };
    // The detail's APIs: the requests of NHIs, beside the uses.
    assert_eq!(sum("dashboard_uses"), uses + requests.len() as u64);
    assert_eq!(sum("dashboard_activity"), uses);
    assert_eq!(result("dashboard_recent").len(), sent.len());
    let drifts = sent.iter().filter(|e| e.verdict == Verdict::Drift).count();
    assert_eq!(result("dashboard_drift").len(), drifts);
    let newest = result("dashboard_recent")[0]["seq"].as_u64();
    assert_eq!(newest, Some(sent.len() as u64 - 1), "newest first");
    assert_eq!(
        sum("scope_uses"),
        result("events_by_nhi").len() as u64,
        "one NHI's uses, grouped"
    );

    // The tables have the TTL asked for, and retention changes are valid statements.
    let tables = rows_of(&out, checks + 1);
    for t in Table::ALL {
        let engine = tables
            .iter()
            .find(|r| r["name"] == t.name())
            .and_then(|r| r["engine_full"].as_str())
            .unwrap_or_else(|| panic!("no table {}: {tables:?}", t.name()));
        assert_eq!(
            migrate::retention_statement(&s, t, engine),
            None,
            "{} was created with its TTL, yet a change is planned: {engine}",
            t.name()
        );
        let shorter = migrate::retention_statement(&schema(Some(7)), t, engine)
            .unwrap_or_else(|| panic!("no statement to change the TTL of {}", t.name()));
        let removed = migrate::retention_statement(&schema(None), t, engine)
            .unwrap_or_else(|| panic!("no statement to remove the TTL of {}", t.name()));
        let mut more = ddl(&s);
        more.extend([shorter, removed]);
        chdb.run(&dir.join(format!("retention-{}", t.name())), &more);
    }
}

#[test]
fn the_modern_schema_works_without_retention() {
    let Some(chdb) = Chdb::get() else { return };
    let dir = temp_dir("chdb-no-retention");
    let s = schema(None);
    let mut stmts = ddl(&s);
    stmts.push("SELECT count() AS n FROM system.tables WHERE database = 'nhiscope'".into());
    let out = chdb.run(&dir, &stmts);
    assert_eq!(
        out.last().and_then(|r| r.first()).map(|r| &r["n"]),
        Some(&Value::from(4))
    );
}
