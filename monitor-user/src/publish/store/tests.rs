//! Unit tests of the store that need no server: rows, schema text, spool, config, queries.
//! The server side is in `tests/tests/clickhouse.rs` (18.16) and `tests/tests/chdb.rs` (26.x).

use std::{fs, path::PathBuf, time::Duration};

use clickhouse::Row as _;

use super::{
    client::SinkError,
    config::{check_url, display_url, ConfigError, Secret, StoreConfig},
    migrate::{civil_from_days, partition_expired},
    queries::{self, Param},
    row::*,
    schema::{Dialect, Schema, Table},
    sink::{Batch, Rows},
    spool::{Pushed, Ranges, Spool},
};
use crate::domain::event::{DriftKind, Event, Kind, OpenOp, Proto, Verdict};

fn t(rfc3339: &str) -> Ts {
    Ts::parse_rfc3339(rfc3339).unwrap()
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nhiscope-store-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn open_event() -> Event {
    let mut e = Event::new(
        Kind::Open,
        t("2026-11-23T11:52:05.123456789Z"),
        "web-1".into(),
    );
    e.pid = 42;
    e.tid = 43;
    e.ppid = 1;
    e.uid = 1000;
    e.gid = 1000;
    e.exe = "/usr/bin/cat".into();
    e.comm = "cat".into();
    e.cmdline = vec!["cat".into(), "/home/u/.aws/credentials".into()].into();
    e.cgroup_id = 9;
    e.container = Some("abc123".into());
    e.pod_uid = Some("0f2a4c1e-6b7d-4e8f-9a0b-1c2d3e4f5a6b".into());
    e.pod = Some("billing-7d9f8-x2x".into());
    e.pod_namespace = Some("payments".into());
    e.container_name = Some("uploader".into());
    e.syscall = Some(OpenOp::Openat);
    e.path = Some("/home/u/.aws/credentials".into());
    e.path_arg = Some(".aws/credentials".into());
    e.flags = Some(0);
    e.result = Some(3);
    e.nhi = Some("dev-aws".into());
    e.verdict = Verdict::Drift;
    e.drift = vec![DriftKind::InteractiveUse, DriftKind::Expired];
    e.reason = "used from a terminal".into();
    e
}

fn connect_event(daddr: &str) -> Event {
    let mut e = Event::new(
        Kind::Connect,
        t("2026-11-23T11:52:06.000000001Z"),
        "web-1".into(),
    );
    e.daddr = Some(daddr.parse().unwrap());
    e.dport = Some(443);
    e.saddr = Some([10, 0, 0, 1].into());
    e.sport = Some(0);
    e.dns_names = Some(vec![]);
    e.nhi = Some("dev-aws".into());
    e.proto = Some(Proto::Udp);
    e.script = Some("/opt/tools/sync.py".into());
    e
}

/// A request event: a TLS ClientHello's fields (`tls`) or an HTTP request line's.
fn request_event(tls: bool) -> Event {
    let mut e = Event::new(
        Kind::Request,
        t("2026-11-23T11:52:06.500000001Z"),
        "web-1".into(),
    );
    e.daddr = Some([52, 1, 2, 3].into());
    e.dport = Some(443);
    e.nhi = Some("dev-aws".into());
    if tls {
        e.wire.sni = Some("bucket.s3.eu-west-1.amazonaws.com".into());
        e.wire.alpn = Some(vec!["h2".into(), "http/1.1".into()]);
        e.wire.tls_version = Some("1.3".into());
    } else {
        e.wire.http_method = Some("POST".into());
        e.wire.http_host = Some("api.example.com:8080".into());
        e.wire.http_path = Some("/v1/charges".into());
        e.verdict = Verdict::Drift;
        e.drift = vec![DriftKind::ApiOutOfScope];
    }
    e
}

fn loss_event() -> Event {
    let mut e = Event::new(Kind::Loss, t("2026-11-23T11:52:07Z"), "web-1".into());
    e.count = Some(0);
    e.cause = Some("ringbuf_full_open".into());
    e.reason = "0 lost".into();
    e
}

#[test]
fn events_survive_the_spool_exactly() {
    for e in [
        open_event(),
        connect_event("52.1.2.3"),
        connect_event("2001:db8::1"),
        loss_event(),
        request_event(true),
        request_event(false),
        Event::new(Kind::Exec, t("2026-11-23T11:52:08.5Z"), "h".into()),
    ] {
        let row = EventRow::from_event(&e, 1, 2);
        let json = serde_json::to_string(&row).unwrap();
        assert!(json.contains(&e.to_json()), "{json}");
        let back: EventRow = serde_json::from_str(&json).unwrap();
        assert_eq!(back, row);
    }
}

#[test]
fn the_spool_writes_event_lines_as_serde_writes_them() {
    for e in [
        open_event(),
        connect_event("52.1.2.3"),
        connect_event("2001:db8::1"),
        loss_event(),
        Event::new(Kind::Exec, t("2026-11-23T11:52:08.5Z"), "h".into()),
    ] {
        let row = EventRow::from_event(&e, 7, u64::MAX);
        let mut line = Vec::new();
        row.write_line(&mut line);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            serde_json::to_string(&row).unwrap()
        );
    }
}

/// Event lines of spools written by earlier versions (the columns side by side), as they wrote
/// them.
const COLUMN_LINES: &[&str] = &[
        "{\"host\":\"web-1\",\"run_id\":7,\"seq\":9,\"ts\":{\"secs\":1795000000,\"nanos\":7},\"kind\":1,\"pid\":4242,\"tid\":4243,\"ppid\":1,\"uid\":1000,\"gid\":0,\"exe\":\"/usr/bin/python3.11\",\"comm\":\"python3\",\"cmdline\":[\"python3\",\"-c\",\"print(\\\"a\\\\b\\\")\\n\\tx\\u0001\u{7f}é😀\\r\\b\\f/\",\"\"],\"cgroup_id\":18446744073709551615,\"container\":\"abc123\",\"syscall\":\"openat2\",\"path\":\"/etc/app/token\",\"path_arg\":\"../app/token\",\"target\":\"/var/lib/x/token\",\"flags\":524288,\"result\":-13,\"error\":\"EACCES\",\"daddr\":\"\",\"dport\":null,\"saddr\":\"\",\"sport\":null,\"dns_names\":[],\"count\":null,\"cause\":\"\",\"nhi\":\"ci-\\\"deploy\\\"\",\"verdict\":2,\"drift\":[\"reader_out_of_scope\",\"interactive_use\",\"stale_credential\"],\"reason\":\"python3 (pid 4242) read\\u001fit.\",\"script\":\"/opt/app/run \\\"quoted\\\".py\",\"proto\":\"\",\"pod_uid\":\"0f1e-uid\",\"pod\":\"api-7d9\",\"pod_namespace\":\"prod\",\"container_name\":\"api\"}",
        "{\"host\":\"h\",\"run_id\":7,\"seq\":9,\"ts\":{\"secs\":0,\"nanos\":0},\"kind\":2,\"pid\":1,\"tid\":0,\"ppid\":0,\"uid\":0,\"gid\":0,\"exe\":\"/usr/bin/curl\",\"comm\":\"curl\",\"cmdline\":[\"curl\",\"-H\",\"Authorization: ***\"],\"cgroup_id\":0,\"container\":\"\",\"syscall\":\"\",\"path\":\"\",\"path_arg\":\"\",\"target\":\"\",\"flags\":null,\"result\":null,\"error\":\"\",\"daddr\":\"93.184.216.34\",\"dport\":443,\"saddr\":\"fe80::1:2\",\"sport\":0,\"dns_names\":[\"example.com\",\"a.example\"],\"count\":null,\"cause\":\"\",\"nhi\":\"s3\",\"verdict\":2,\"drift\":[\"endpoint_out_of_scope\",\"expired\"],\"reason\":\"out\",\"script\":\"\",\"proto\":\"udp\",\"pod_uid\":\"\",\"pod\":\"\",\"pod_namespace\":\"\",\"container_name\":\"\"}",
];

#[test]
fn spooled_rows_of_earlier_versions_read_as_the_same_events() {
    // The lines were written for the first two events of `event::tests::fixtures`; rows did not
    // keep an open's inode and device then.
    let mut fixtures = crate::domain::event::tests::fixtures();
    let mut open = fixtures.remove(0);
    open.inode = None;
    open.dev = None;
    let connect = fixtures.remove(0);
    for (line, want) in COLUMN_LINES.iter().zip([open, connect]) {
        let row: EventRow = serde_json::from_str(line).unwrap();
        assert_eq!(row, EventRow::new(want, 7, 9));
    }
    // A code this version does not know is an error (the batch goes to `corrupt/`), not a
    // wrong event.
    let unknown = COLUMN_LINES[0].replace("\"kind\":1,", "\"kind\":99,");
    assert!(serde_json::from_str::<EventRow>(&unknown).is_err());
}

#[test]
fn every_event_field_is_mapped() {
    // A new always-present field on Event must be mapped to a column (and added here).
    let mapped = [
        "ts",
        "host",
        "kind",
        "pid",
        "tid",
        "ppid",
        "uid",
        "gid",
        "exe",
        "comm",
        "cmdline",
        "cgroup_id",
        "container",
        "syscall",
        "path",
        "path_arg",
        "target",
        "flags",
        "result",
        "error",
        "daddr",
        "dport",
        "saddr",
        "sport",
        "dns_names",
        "count",
        "cause",
        "nhi",
        "verdict",
        "drift",
        "reason",
        "script",
        "proto",
        "pod_uid",
        "pod",
        "pod_namespace",
        "container_name",
    ];
    for e in [open_event(), connect_event("1.2.3.4"), loss_event()] {
        let v = serde_json::to_value(&e).unwrap();
        for key in v.as_object().unwrap().keys() {
            assert!(mapped.contains(&key.as_str()), "Event.{key} has no column");
        }
    }
}

#[test]
fn enum_codes_match_the_ddl_and_the_json_names() {
    for k in [
        Kind::Open,
        Kind::Connect,
        Kind::Exec,
        Kind::Exit,
        Kind::Dns,
        Kind::Loss,
        Kind::Request,
    ] {
        let name = serde_json::to_value(k).unwrap();
        let item = format!("'{}' = {}", name.as_str().unwrap(), kind_code(k));
        assert!(super::schema::kind_enum().contains(&item), "{item}");
        assert_eq!(super::row::kind_from_code(kind_code(k)), Some(k));
    }
    // Tables made at version 1 had no `request`; version 5 adds it.
    assert!(!super::schema::kind_enum_at(4).contains("request"));
    assert!(super::schema::kind_enum_at(5).contains("'request' = 7"));
    for v in [Verdict::Ok, Verdict::Drift, Verdict::Unregistered] {
        let name = serde_json::to_value(v).unwrap();
        let item = format!("'{}' = {}", name.as_str().unwrap(), verdict_code(v));
        assert!(super::schema::verdict_enum().contains(&item), "{item}");
    }
}

fn schema(dialect: Dialect, cluster: Option<&str>, retention: Option<u32>) -> Schema {
    Schema {
        database: "nhiscope".into(),
        cluster: cluster.map(str::to_owned),
        retention_days: retention,
        dialect,
    }
}

#[test]
fn wire_rows_send_the_columns_of_the_ddl_in_order() {
    let names = |s: &Schema, t: Table| -> Vec<String> {
        s.column_types(t).into_iter().map(|(n, _)| n).collect()
    };
    let legacy = schema(Dialect::Legacy, None, None);
    let modern = schema(Dialect::Modern, None, None);
    assert_eq!(LegacyEvent::COLUMN_NAMES, names(&legacy, Table::Events));
    assert_eq!(LegacyLoss::COLUMN_NAMES, names(&legacy, Table::Losses));
    assert_eq!(LegacyAgent::COLUMN_NAMES, names(&legacy, Table::Agents));
    assert_eq!(ModernEvent::COLUMN_NAMES, names(&modern, Table::Events));
    assert_eq!(ModernLoss::COLUMN_NAMES, names(&modern, Table::Losses));
    assert_eq!(ModernAgent::COLUMN_NAMES, names(&modern, Table::Agents));
}

#[test]
fn legacy_ddl_uses_only_what_18_16_has() {
    let s = schema(Dialect::Legacy, None, Some(30));
    let all: String = Table::ALL
        .iter()
        .flat_map(|t| s.create_table(*t))
        .collect::<Vec<_>>()
        .join("\n");
    for missing in [
        "DateTime64",
        "IPv6",
        "TTL",
        "LowCardinality",
        "Map(",
        "ON CLUSTER",
    ] {
        assert!(!all.contains(missing), "{missing} in legacy DDL:\n{all}");
    }
    assert!(all.contains("ENGINE = ReplacingMergeTree"));
    assert!(all.contains("ORDER BY (nhi, verdict, host, ts, run_id, seq)"));
    assert!(all.contains("PARTITION BY toYYYYMMDD(ts)"));
}

#[test]
fn modern_ddl_uses_what_current_servers_offer() {
    let s = schema(Dialect::Modern, None, Some(30));
    let events = s.create_table(Table::Events).join("\n");
    for wanted in [
        "ts DateTime64(9, 'UTC')",
        "daddr Nullable(IPv6)",
        "nhi LowCardinality(String)",
        "TTL toDateTime(ts) + toIntervalDay(30)",
        "non_replicated_deduplication_window = 1000",
        "ttl_only_drop_parts = 1",
    ] {
        assert!(events.contains(wanted), "{wanted} missing:\n{events}");
    }
    let agents = s.create_table(Table::Agents).join("\n");
    assert!(agents.contains("counters Map(LowCardinality(String), UInt64)"));
    assert!(!schema(Dialect::Modern, None, None).create_table(Table::Events)[0].contains("TTL"));
}

#[test]
fn cluster_ddl_is_replicated_and_distributed() {
    let s = schema(Dialect::Legacy, Some("fleet"), None);
    let ddl = s.create_table(Table::Events);
    assert_eq!(ddl.len(), 2);
    assert!(ddl[0].starts_with("CREATE TABLE IF NOT EXISTS nhiscope.events_local ON CLUSTER fleet"));
    assert!(ddl[0].contains(
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/nhiscope/events_local', '{replica}')"
    ));
    assert!(ddl[1].contains(
        "nhiscope.events ON CLUSTER fleet AS nhiscope.events_local ENGINE = \
         Distributed(fleet, nhiscope, events_local, cityHash64(host))"
    ));
    assert!(s.create_database().ends_with("ON CLUSTER fleet"));
    assert!(s.create_migrations_table().contains("ReplicatedMergeTree("));
}

#[test]
fn version_5_adds_the_request_kind_and_the_wire_columns_in_both_dialects() {
    let v5 = |s: &Schema| (super::schema::MIGRATIONS[4].statements)(s);
    let legacy = v5(&schema(Dialect::Legacy, None, None));
    assert!(legacy[0].starts_with("ALTER TABLE nhiscope.events MODIFY COLUMN kind Enum8("));
    assert!(legacy[0].contains("'request' = 7"), "{}", legacy[0]);
    for col in [
        "ADD COLUMN sni String",
        "ADD COLUMN alpn Array(String)",
        "ADD COLUMN tls_version String",
        "ADD COLUMN http_method String",
        "ADD COLUMN http_host String",
        "ADD COLUMN http_path String",
    ] {
        assert!(legacy.iter().any(|s| s.ends_with(col)), "{col}: {legacy:?}");
    }
    let modern = v5(&schema(Dialect::Modern, None, None));
    for col in [
        "ADD COLUMN IF NOT EXISTS sni LowCardinality(String)",
        "ADD COLUMN IF NOT EXISTS alpn Array(LowCardinality(String))",
        "ADD COLUMN IF NOT EXISTS http_path String",
    ] {
        assert!(modern.iter().any(|s| s.ends_with(col)), "{col}: {modern:?}");
    }
    // On a cluster: the local tables, then the `Distributed` one made again over them.
    let cluster = v5(&schema(Dialect::Legacy, Some("fleet"), None));
    assert!(cluster[0].starts_with("ALTER TABLE nhiscope.events_local ON CLUSTER fleet MODIFY"));
    assert!(cluster[cluster.len() - 2].starts_with("DROP TABLE IF EXISTS nhiscope.events ON"));
    assert!(cluster[cluster.len() - 1].contains("ENGINE = Distributed(fleet"));
    // A fresh table made at version 4 has the old kinds; at the latest, `request` too.
    let s = schema(Dialect::Legacy, None, None);
    let v1 = (super::schema::MIGRATIONS[0].statements)(&s).join("\n");
    assert!(!v1.contains("request"), "{v1}");
    assert!(s.create_table(Table::Events)[0].contains("'request' = 7"));
}

#[test]
fn dialect_follows_the_server_version() {
    assert_eq!(Dialect::for_server("18.16.1"), Dialect::Legacy);
    assert_eq!(Dialect::for_server("22.2.3.1"), Dialect::Legacy);
    assert_eq!(Dialect::for_server("22.3.1"), Dialect::Modern);
    assert_eq!(Dialect::for_server("26.9.2.1"), Dialect::Modern);
    assert_eq!(Dialect::for_server("weird"), Dialect::Modern);
    for d in [Dialect::Legacy, Dialect::Modern] {
        assert_eq!(Dialect::parse(d.as_str()), Some(d));
    }
}

fn event_batch(run: u64, seqs: std::ops::Range<u64>) -> Batch {
    let rows = seqs
        .map(|s| EventRow::from_event(&open_event(), run, s))
        .collect();
    Batch::new("web-1", run, Rows::Events(rows))
}

#[test]
fn batches_name_their_rows() {
    let b = event_batch(0xab, 10..15);
    assert_eq!(b.token, "web-1:00000000000000ab:events:10:5");
    assert_eq!(b.seq_range(), (10, 14));
    assert_eq!(b.len(), 5);
}

#[test]
fn the_spool_keeps_order_bound_and_survives_reopening() {
    let d = dir("spool");
    let one = event_batch(1, 0..10);
    let size = {
        let mut s = Spool::open(&d.join("probe"), u64::MAX).unwrap();
        s.push(&one).unwrap();
        s.bytes()
    };
    let mut s = Spool::open(&d, size * 2 + size / 2).unwrap();
    assert_eq!(s.push(&event_batch(1, 0..10)).unwrap(), Pushed::Stored);
    assert_eq!(s.push(&event_batch(1, 10..20)).unwrap(), Pushed::Stored);
    assert_eq!(s.push(&event_batch(1, 20..30)).unwrap(), Pushed::Full);
    // Loss rows always fit.
    let loss = LossRow {
        host: "web-1".into(),
        run_id: 1,
        seq: 0,
        start: Ts::default(),
        end: Ts::now(),
        count: 10,
        cause: "spool_full".into(),
        reason: String::new(),
    };
    let losses = Batch::new("web-1", 1, Rows::Losses(vec![loss]));
    assert_eq!(s.push(&losses).unwrap(), Pushed::Stored);
    assert_eq!((s.len(), s.rows()), (3, 21));
    assert_eq!(s.event_ranges(1), vec![(0, 9), (10, 19)]);
    // A batch file half-written by a crash is not a batch.
    fs::write(
        d.join("batches").join("0000000000000099.events.batch.tmp"),
        "{",
    )
    .unwrap();
    drop(s);

    let mut s = Spool::open(&d, u64::MAX).unwrap();
    assert_eq!(s.len(), 3);
    let front = s.front().unwrap().clone();
    assert!(
        front.uncertain,
        "restored batches may have been inserted already"
    );
    let b = s.read(&front).unwrap();
    assert_eq!(b.rows, event_batch(1, 0..10).rows);
    assert_eq!(b.token, event_batch(1, 0..10).token);
    s.pop_front().unwrap();
    assert_eq!(
        s.read(&s.front().unwrap().clone()).unwrap().seq_range(),
        (10, 19)
    );
    s.pop_front().unwrap();
    assert_eq!(s.front().unwrap().table, Table::Losses);
    s.pop_front().unwrap();
    assert!(s.is_empty() && s.bytes() == 0);
    assert!(!d
        .join("batches")
        .join("0000000000000099.events.batch.tmp")
        .exists());
}

#[test]
fn a_corrupt_batch_is_moved_aside() {
    let d = dir("corrupt");
    fs::create_dir_all(d.join("batches")).unwrap();
    fs::write(
        d.join("batches").join("0000000000000001.events.batch"),
        "not json\n",
    )
    .unwrap();
    let s = Spool::open(&d, u64::MAX).unwrap();
    assert!(s.is_empty());
    assert!(d
        .join("corrupt")
        .join("0000000000000001.events.batch")
        .exists());
}

#[test]
fn ranges_merge_and_count() {
    let mut r = Ranges::default();
    r.insert(10, 19);
    r.insert(0, 4);
    r.insert(5, 9);
    r.insert(30, 39);
    assert_eq!(r.as_vec(), &[(0, 19), (30, 39)]);
    assert_eq!(r.count_below(35), 25);
    r.insert(15, 32);
    assert_eq!(r.as_vec(), &[(0, 39)]);
    assert_eq!(
        Ranges::from_vec(vec![(5, 6), (0, 1), (2, 4)]).as_vec(),
        &[(0, 6)]
    );
}

#[test]
fn urls_are_checked_and_never_echo_a_password() {
    assert_eq!(check_url("http://ch:8123/").unwrap(), "http://ch:8123");
    let bad = [
        ("ftp://ch", "not http"),
        ("http://u:topsecret@ch:8123", "credentials do not belong"),
        ("http://ch:8123/db", "a path"),
        ("http://ch:8123/?user=x", "query string"),
        ("https://u:topsecret@ch:8443", "credentials do not belong"),
        ("https://ch:8443/?password=topsecret", "query string"),
        ("https://ch:8443/topsecret", "a path"),
        ("ch:8123", "not http"),
        ("", "not a URL"),
    ];
    for (url, why) in bad {
        let e = check_url(url).unwrap_err().to_string();
        assert!(e.contains(why), "{url}: {e}");
        assert!(!e.contains("topsecret"), "{e}");
    }
    assert_eq!(format!("{:?}", Secret::new("topsecret")), "***");
}

/// Whatever URL is given, what is printed (errors, logs, the dashboard, `db migrate`) is
/// `scheme://host:port` and nothing else.
#[test]
fn urls_print_as_scheme_host_and_port_only() {
    for (url, shown) in [
        ("http://ch:8123", "http://ch:8123"),
        ("https://ch.example", "https://ch.example:443"),
        ("http://ch.example/", "http://ch.example:80"),
        (
            "https://u:topsecret@ch:8443/db?password=topsecret#x",
            "https://ch:8443",
        ),
        (
            "http://[::1]:8123/?user=a&password=topsecret",
            "http://[::1]:8123",
        ),
        ("HTTPS://CH:8443", "https://ch:8443"),
        ("not a url topsecret", "(not a URL)"),
    ] {
        assert_eq!(display_url(url), shown, "{url}");
    }
    // Each bad URL's error shows it the same way.
    for url in [
        "https://u:topsecret@ch:8443",
        "https://ch:8443/?password=topsecret",
        "http://ch:8123/topsecret",
    ] {
        let e = check_url(url).unwrap_err().to_string();
        assert!(!e.contains("topsecret"), "{e}");
        assert!(e.contains("://ch:"), "{e}");
    }
    let c = StoreConfig::new("https://127.0.0.1:8443/").unwrap();
    assert_eq!(c.display_url(), "https://127.0.0.1:8443");
    assert!(
        c.tls.is_some(),
        "an https URL is TLS, with the system roots"
    );
    assert!(StoreConfig::new("http://127.0.0.1:8123")
        .unwrap()
        .tls
        .is_none());
}

/// A bad `ca_file:`, `client_cert_file:` or `client_key_file:` is an error naming the config
/// file, the key and the file, and quoting nothing the file holds.
#[test]
fn tls_files_are_checked_when_the_config_is_loaded() {
    let d = dir("tls-bad");
    let none = |_: &str| None;
    let file = d.join("ch.yaml");
    let junk = d.join("junk.pem");
    fs::write(&junk, "-----BEGIN PRIVATE KEY-----\ntopsecret-key-line\n").unwrap();
    let empty = d.join("empty.pem");
    fs::write(&empty, "nothing here\n").unwrap();
    let load = |yaml: String| {
        fs::write(&file, yaml).unwrap();
        StoreConfig::load(Some(&file), None, None, &none)
    };
    let at = file.display().to_string();
    let cases = [
        (
            format!(
                "url: https://ch:8443\nca_file: {}/missing.pem\n",
                d.display()
            ),
            "ca_file",
            "missing.pem",
            "cannot read",
        ),
        (
            format!("url: https://ch:8443\nca_file: {}\n", empty.display()),
            "ca_file",
            "empty.pem",
            "no PEM certificate",
        ),
        (
            format!("url: https://ch:8443\nca_file: {}\n", junk.display()),
            "ca_file",
            "junk.pem",
            "PEM",
        ),
        (
            format!(
                "url: https://ch:8443\nclient_cert_file: {}\nclient_key_file: {}\n",
                empty.display(),
                junk.display()
            ),
            "client_cert_file",
            "empty.pem",
            "no PEM certificate",
        ),
    ];
    for (yaml, key, name, why) in cases {
        let e = load(yaml.clone()).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ConfigError::Tls { .. }), "{yaml}: {msg}");
        assert!(msg.starts_with(&at), "{msg}");
        assert!(
            msg.contains(&format!("{key} ")) && msg.contains(name),
            "{msg}"
        );
        assert!(msg.contains(why), "{msg}");
        assert!(!msg.contains("topsecret"), "{msg}");
    }
    let msg = load(format!(
        "url: https://ch:8443\nclient_cert_file: {}\n",
        junk.display()
    ))
    .unwrap_err()
    .to_string();
    assert!(msg.contains("without client_key_file"), "{msg}");
    let msg = load(format!(
        "url: http://ch:8123\nca_file: {}\n",
        junk.display()
    ))
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("https://") && msg.contains("http://ch:8123"),
        "{msg}"
    );
}

#[test]
fn the_config_file_env_and_flags_combine() {
    let d = dir("config");
    let pw = d.join("pw");
    fs::write(&pw, "from-file\n").unwrap();
    let file = d.join("ch.yaml");
    fs::write(
        &file,
        format!(
            "url: http://ch:8123\ndatabase: audit\nuser: filer\npassword_file: {}\n\
             retention_days: 90\nbatch_interval: 2s\nspool_dir: /tmp/x\ncompression: none\n",
            pw.display()
        ),
    )
    .unwrap();
    let none = |_: &str| None;
    let c = StoreConfig::load(Some(&file), None, None, &none)
        .unwrap()
        .unwrap();
    assert_eq!(c.url, "http://ch:8123");
    assert_eq!(c.database, "audit");
    assert_eq!(c.user.as_deref(), Some("filer"));
    assert_eq!(c.password, Some(Secret::new("from-file")));
    assert_eq!(c.retention_days, Some(90));
    assert_eq!(c.batch_interval, Duration::from_secs(2));
    assert_eq!(c.spool_dir, PathBuf::from("/tmp/x"));

    let env = |k: &str| match k {
        "NHISCOPE_CLICKHOUSE_USER" => Some("envuser".to_owned()),
        "NHISCOPE_CLICKHOUSE_PASSWORD" => Some("from-env".to_owned()),
        _ => None,
    };
    let c = StoreConfig::load(Some(&file), Some("http://other:8123"), Some("fleet"), &env)
        .unwrap()
        .unwrap();
    assert_eq!(c.url, "http://other:8123");
    assert_eq!(c.cluster.as_deref(), Some("fleet"));
    assert_eq!(c.user.as_deref(), Some("envuser"));
    assert_eq!(c.password, Some(Secret::new("from-env")));

    assert!(StoreConfig::load(None, None, None, &none)
        .unwrap()
        .is_none());
}

#[test]
fn config_errors_name_the_place() {
    let d = dir("config-bad");
    let none = |_: &str| None;
    let file = d.join("ch.yaml");
    fs::write(&file, "url: http://ch:8123\npassword: hunter2\n").unwrap();
    let e = StoreConfig::load(Some(&file), None, None, &none).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ConfigError::Invalid { line: 2, .. }), "{msg}");
    assert!(msg.contains("unknown field `password`"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");

    fs::write(&file, "url: http://ch:8123\nbatch_interval: soon\n").unwrap();
    let msg = StoreConfig::load(Some(&file), None, None, &none)
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with(&format!("{}:2:", file.display())), "{msg}");

    fs::write(&file, "url: http://ch:8123\ndatabase: 'x; DROP'\n").unwrap();
    let msg = StoreConfig::load(Some(&file), None, None, &none)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("database"), "{msg}");

    fs::write(
        &file,
        "url: http://ch:8123\npassword_file: /nonexistent/pw\n",
    )
    .unwrap();
    let msg = StoreConfig::load(Some(&file), None, None, &none)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("password_file /nonexistent/pw"), "{msg}");
}

#[test]
fn old_partitions_expire_whole() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(20_415), (2025, 11, 23));
    let cutoff = (2026, 11, 23);
    assert!(partition_expired("20261122", cutoff));
    assert!(!partition_expired("20261123", cutoff));
    assert!(partition_expired("202610", cutoff));
    assert!(
        !partition_expired("202611", cutoff),
        "the month is not wholly past"
    );
    assert!(!partition_expired("tuple()", cutoff));
}

#[test]
fn every_query_has_its_parameters_in_both_dialects() {
    for q in queries::ALL {
        for d in [Dialect::Legacy, Dialect::Modern] {
            let sql = q.sql(d, "nhiscope");
            assert_eq!(
                sql.matches('?').count(),
                q.params.len(),
                "{} ({d:?}): {sql}",
                q.name
            );
            assert!(!sql.contains("{db}"));
        }
    }
    let sql = queries::EVENTS_BY_NHI.render(
        Dialect::Legacy,
        "db",
        &[
            Param::from("it's\\"),
            Param::U64(1),
            Param::U64(2),
            Param::U64(3),
        ],
    );
    assert!(
        sql.contains("nhi = 'it\\'s\\\\' AND ts >= toDateTime(1)"),
        "{sql}"
    );
}

#[test]
fn errors_say_what_to_fix() {
    let auth = clickhouse::error::Error::BadResponse(
        "Code: 193, e.displayText() = DB::Exception: Wrong password for user writer".into(),
    );
    let e = SinkError::from_clickhouse(&auth, Some("writer"));
    assert!(
        e.message
            .contains("authentication failed for user `writer`"),
        "{}",
        e.message
    );
    assert!(!e.uncertain);
    let e = SinkError::from_clickhouse(&clickhouse::error::Error::TimedOut, None);
    assert!(e.uncertain, "a timeout may have stored the batch");
}

#[test]
fn timestamps_parse_exactly() {
    use std::time::{Duration, UNIX_EPOCH};
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..20_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Runs within one second and jumps across the calendar.
        let secs = if i % 3 == 0 {
            x % 4_000_000_000
        } else {
            1_795_000_000 + i / 500
        };
        let t = UNIX_EPOCH + Duration::new(secs, (x % 1_000_000_000) as u32);
        let text = humantime::format_rfc3339_nanos(t).to_string();
        assert_eq!(Ts::parse_rfc3339(&text), Some(Ts::from_system(t)), "{text}");
    }
    // Other RFC 3339 forms still parse; garbage does not.
    assert_eq!(
        Ts::parse_rfc3339("2026-11-18T11:06:40Z"),
        Some(Ts {
            secs: 1_795_000_000,
            nanos: 0
        })
    );
    assert_eq!(
        Ts::parse_rfc3339("2026-11-18T11:06:40.5Z"),
        Some(Ts {
            secs: 1_795_000_000,
            nanos: 500_000_000
        })
    );
    assert_eq!(Ts::parse_rfc3339("2026-11-18T11:06:40.12345678xZ"), None);
}

#[test]
fn bad_data_is_told_from_a_failing_server() {
    let refused = |m: &str| {
        SinkError::from_clickhouse(&clickhouse::error::Error::BadResponse(m.into()), None)
    };
    let parse = refused(
        "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected \\t before: x",
    );
    assert!(parse.rejected, "{}", parse.message);
    assert!(refused("Code: 53, e.displayText() = DB::Exception: Type mismatch").rejected);
    assert!(refused("400 Bad Request").rejected);
    // The server's trouble, not the data's: retried as long as it takes.
    assert!(!refused("Code: 252, e.displayText() = DB::Exception: Too many parts").rejected);
    assert!(!refused("Code: 241, e.displayText() = DB::Exception: Memory limit").rejected);
    assert!(!refused("503 Service Unavailable").rejected);
    assert!(!refused("Code: 516, e.displayText() = DB::Exception: Authentication failed").rejected);
    assert!(!SinkError::from_clickhouse(&clickhouse::error::Error::TimedOut, None).rejected);
}

/// A store whose server never answers (nothing listens on port 1), on a fresh spool.
fn unreachable_config(spool: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new("http://127.0.0.1:1").unwrap();
    c.spool_dir = spool.to_path_buf();
    c.batch_rows = 10;
    c.batch_interval = Duration::from_secs(3600);
    c.retry_max = Duration::from_secs(60);
    c.shutdown_timeout = Duration::from_secs(1);
    c
}

#[tokio::test(flavor = "current_thread")]
async fn sending_never_waits_for_the_disk() {
    let spool = dir("slow-disk").join("spool");
    super::spool::tests_slow::set(&spool, Duration::from_millis(300));
    let store = super::Store::start(unreachable_config(&spool), "host-s").unwrap();
    // Fifteen full batches in a row, the loop never yielding: the writer and the spooler queue
    // twelve, the last three are dropped and counted, and no send waits for a write to the
    // (slow) spool.
    for _ in 0..15 {
        let t = std::time::Instant::now();
        store.send(&vec![open_event(); 10]);
        assert!(
            t.elapsed() < Duration::from_millis(150),
            "send waited {:?} for the spool",
            t.elapsed()
        );
    }
    let report = store.shutdown().await.unwrap();
    assert_eq!(report.stats.dropped_events, 30, "{report:?}");
    assert_eq!(report.stats.dropped_backlog, 30, "{report:?}");
    let losses = spooled_losses(&spool);
    assert_eq!(losses.len(), 1, "{losses:?}");
    assert_eq!(
        (losses[0].cause.as_str(), losses[0].count),
        ("store_backlog", 30)
    );
    // The 120 queued events and the loss row.
    assert_eq!(report.stats.spool_rows, 121, "{report:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_second_store_on_a_spool_is_refused_with_the_first_ones_pid() {
    let spool = dir("second").join("spool");
    let first = super::Store::start(unreachable_config(&spool), "host-1").unwrap();
    let e = super::Store::start(unreachable_config(&spool), "host-2")
        .err()
        .expect("a second store on the same spool");
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{e}"
    );
    first.shutdown().await.unwrap();
    // The lock goes with the store.
    let again = super::Store::start(unreachable_config(&spool), "host-2").unwrap();
    again.shutdown().await.unwrap();
}

/// The loss rows waiting in the spool at `dir` (its `*.losses.batch` files: a header line, then
/// one row per line).
fn spooled_losses(dir: &std::path::Path) -> Vec<LossRow> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir.join("batches")).unwrap() {
        let path = e.unwrap().path();
        if !path.to_string_lossy().ends_with(".losses.batch") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
            out.push(serde_json::from_str(line).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "current_thread")]
async fn what_cannot_be_read_back_at_start_becomes_a_loss_row() {
    let spool = dir("unreadable").join("spool");
    fs::create_dir_all(spool.join("batches")).unwrap();
    fs::write(spool.join("state.json"), "{\"run_id\": 1, trunc").unwrap();
    fs::write(
        spool.join("batches").join("0000000000000007.events.batch"),
        "not a header\n",
    )
    .unwrap();
    let store = super::Store::start(unreachable_config(&spool), "host-u").unwrap();
    store.shutdown().await.unwrap();
    let mut causes: Vec<String> = spooled_losses(&spool)
        .into_iter()
        .map(|r| r.cause)
        .collect();
    causes.sort();
    assert_eq!(causes, ["checkpoint_corrupt", "spool_corrupt"]);
    assert!(spool.join("corrupt").join("state.json").exists());
    assert!(spool
        .join("corrupt")
        .join("0000000000000007.events.batch")
        .exists());
}

#[test]
fn a_rejected_batch_is_set_aside_and_the_rest_stays_in_order() {
    let d = dir("deadletter");
    let mut s = Spool::open(&d, u64::MAX).unwrap();
    s.push(&event_batch(1, 0..5)).unwrap();
    s.push(&event_batch(1, 5..10)).unwrap();
    let gone = s.dead_letter_front().unwrap();
    assert_eq!(gone.rows, 5);
    assert!(gone.path.starts_with(d.join("deadletter")), "{gone:?}");
    assert!(gone.path.exists());
    assert_eq!(s.len(), 1);
    assert_eq!(s.front().unwrap().first_seq, 5);
    drop(s);
    let s = Spool::open(&d, u64::MAX).unwrap();
    assert_eq!(
        s.len(),
        1,
        "the dead letter is not replayed after a restart"
    );
}
