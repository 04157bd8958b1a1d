use std::{
    io::{Read as _, Write as _},
    sync::Arc,
    time::Duration,
};

use super::{http, *};

fn event(kind: Kind, verdict: Verdict, nhi: Option<&str>, drift: &[DriftKind]) -> Event {
    let mut e = Event::new(kind, crate::domain::event::Ts::default(), "h".into());
    e.verdict = verdict;
    e.nhi = nhi.map(Into::into);
    e.drift = drift.to_vec();
    e
}

fn registry(ids: &[&str]) -> Registry {
    let mut yaml = String::from("nhis:\n");
    for id in ids {
        yaml.push_str(&format!("  - id: {id}\n    credentials: [/etc/{id}/key]\n"));
    }
    crate::domain::registry::parse(&yaml, "r.yaml").expect("registry")
}

/// The value of the sample `series` (name and labels exactly as written) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

fn render(m: &Arc<Metrics>) -> String {
    Metrics::render(m).expect("render")
}

#[test]
fn the_index_tables_follow_the_lists() {
    for (i, k) in KINDS.iter().enumerate() {
        assert_eq!(kind_index(*k), i);
        assert_eq!(
            serde_json::to_value(k).expect("json"),
            kind_name(*k),
            "the label is the JSON name"
        );
    }
    for (i, v) in VERDICTS.iter().enumerate() {
        assert_eq!(verdict_index(*v), i);
        assert_eq!(serde_json::to_value(v).expect("json"), verdict_name(*v));
    }
    for (i, d) in DRIFT_KINDS.iter().enumerate() {
        assert_eq!(drift_index(*d), i);
    }
}

#[test]
fn events_are_counted_by_kind_and_verdict_and_drift_by_nhi_and_kind() {
    let m = Arc::new(Metrics::new());
    m.set_registry(&registry(&["svc", "other"]));
    m.observe(&[
        event(Kind::Open, Verdict::Ok, Some("svc"), &[]),
        event(Kind::Open, Verdict::Ok, Some("svc"), &[]),
        event(
            Kind::Open,
            Verdict::Drift,
            Some("svc"),
            &[DriftKind::ReaderOutOfScope, DriftKind::InteractiveUse],
        ),
        event(
            Kind::Connect,
            Verdict::Drift,
            Some("svc"),
            &[DriftKind::EndpointOutOfScope],
        ),
        event(Kind::Open, Verdict::Unregistered, None, &[]),
        event(Kind::Exec, Verdict::Ok, None, &[]),
    ]);
    let t = render(&m);
    let v = |s| value(&t, s);
    assert_eq!(
        v("nhiscope_events_total{kind=\"open\",verdict=\"ok\"}"),
        Some(2.0)
    );
    assert_eq!(
        v("nhiscope_events_total{kind=\"open\",verdict=\"drift\"}"),
        Some(1.0)
    );
    assert_eq!(
        v("nhiscope_events_total{kind=\"open\",verdict=\"unregistered\"}"),
        Some(1.0)
    );
    assert_eq!(
        v("nhiscope_events_total{kind=\"connect\",verdict=\"drift\"}"),
        Some(1.0)
    );
    assert_eq!(
        v("nhiscope_events_total{kind=\"exec\",verdict=\"ok\"}"),
        Some(1.0)
    );
    // Every combination is there from the start, at zero.
    assert_eq!(
        v("nhiscope_events_total{kind=\"loss\",verdict=\"ok\"}"),
        Some(0.0)
    );
    assert_eq!(
        v("nhiscope_drift_total{nhi=\"svc\",kind=\"reader_out_of_scope\"}"),
        Some(1.0)
    );
    assert_eq!(
        v("nhiscope_drift_total{nhi=\"svc\",kind=\"interactive_use\"}"),
        Some(1.0)
    );
    assert_eq!(
        v("nhiscope_drift_total{nhi=\"svc\",kind=\"endpoint_out_of_scope\"}"),
        Some(1.0)
    );
    // A registered NHI that never drifted has its series at zero.
    assert_eq!(
        v("nhiscope_drift_total{nhi=\"other\",kind=\"expired\"}"),
        Some(0.0)
    );
    assert_eq!(v("nhiscope_registry_nhis"), Some(2.0));
}

#[test]
fn nhis_of_earlier_registries_keep_their_counters() {
    let m = Arc::new(Metrics::new());
    m.set_registry(&registry(&["a"]));
    m.observe(&[event(
        Kind::Open,
        Verdict::Drift,
        Some("a"),
        &[DriftKind::Expired],
    )]);
    m.set_registry(&registry(&["b"]));
    m.reloaded(true);
    m.reloaded(false);
    // A drift naming an NHI of no registry (the engine does not make those) is still counted.
    m.observe(&[event(
        Kind::Open,
        Verdict::Drift,
        Some("c"),
        &[DriftKind::Expired],
    )]);
    let t = render(&m);
    assert_eq!(
        value(&t, "nhiscope_drift_total{nhi=\"a\",kind=\"expired\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&t, "nhiscope_drift_total{nhi=\"b\",kind=\"expired\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&t, "nhiscope_drift_total{nhi=\"c\",kind=\"expired\"}"),
        Some(1.0)
    );
    assert_eq!(value(&t, "nhiscope_registry_nhis"), Some(1.0));
    assert_eq!(value(&t, "nhiscope_registry_reloads_total"), Some(1.0));
    assert_eq!(
        value(&t, "nhiscope_registry_reload_failures_total"),
        Some(1.0)
    );
}

#[test]
fn samples_show_as_gauges_and_counters_and_clickhouse_only_with_a_store() {
    let m = Arc::new(Metrics::new());
    let mut s = Sample {
        ringbuf_fill: 0.25,
        ringbuf_bytes: 1 << 23,
        records: 42,
        dns_cached_addresses: 3,
        live_clients: 2,
        live_clients_dropped: 1,
        live_clients_refused: 5,
        ..Sample::default()
    };
    s.kernel_losses[LossCause::RingbufOpen as usize] = 7;
    s.dns.queries = 9;
    s.dns.rejected = 4;
    s.dns.records_rejected = 1;
    s.dns.other_server = 6;
    s.dns.untrusted_ns = 2;
    m.sample(&s);
    let t = render(&m);
    assert_eq!(value(&t, "nhiscope_ringbuf_fill_ratio"), Some(0.25));
    assert_eq!(value(&t, "nhiscope_ringbuf_size_bytes"), Some(8_388_608.0));
    assert_eq!(value(&t, "nhiscope_kernel_records_total"), Some(42.0));
    assert_eq!(
        value(&t, "nhiscope_losses_total{cause=\"ringbuf_full_open\"}"),
        Some(7.0)
    );
    assert_eq!(
        value(&t, "nhiscope_losses_total{cause=\"spool_full\"}"),
        Some(0.0)
    );
    assert_eq!(value(&t, "nhiscope_dns_cache_addresses"), Some(3.0));
    assert_eq!(value(&t, "nhiscope_dns_queries_total"), Some(9.0));
    assert_eq!(value(&t, "nhiscope_dns_rejected_total"), Some(5.0));
    assert_eq!(
        value(
            &t,
            "nhiscope_dns_queries_unbelievable_total{reason=\"other_server\"}"
        ),
        Some(6.0)
    );
    assert_eq!(
        value(
            &t,
            "nhiscope_dns_queries_unbelievable_total{reason=\"user_namespace\"}"
        ),
        Some(2.0)
    );
    assert_eq!(value(&t, "nhiscope_live_clients"), Some(2.0));
    assert_eq!(value(&t, "nhiscope_live_clients_dropped_total"), Some(1.0));
    assert_eq!(value(&t, "nhiscope_live_clients_refused_total"), Some(5.0));
    assert!(!t.contains("nhiscope_clickhouse"), "{t}");
    assert!(!t.contains("nhiscope_spool"), "{t}");

    s.store = Some(crate::publish::store::StoreStats {
        healthy: false,
        lag: Duration::from_millis(1500),
        inserted_rows: 10,
        errors: 3,
        spool_bytes: 4096,
        spool_rows: 12,
        dropped_events: 8,
        dropped_backlog: 2,
        ..Default::default()
    });
    m.sample(&s);
    let t = render(&m);
    assert_eq!(value(&t, "nhiscope_clickhouse_up"), Some(0.0));
    assert_eq!(value(&t, "nhiscope_clickhouse_lag_seconds"), Some(1.5));
    assert_eq!(
        value(&t, "nhiscope_clickhouse_inserted_rows_total"),
        Some(10.0)
    );
    assert_eq!(value(&t, "nhiscope_clickhouse_errors_total"), Some(3.0));
    assert_eq!(value(&t, "nhiscope_spool_bytes"), Some(4096.0));
    assert_eq!(value(&t, "nhiscope_spool_rows"), Some(12.0));
    assert_eq!(
        value(&t, "nhiscope_losses_total{cause=\"spool_full\"}"),
        Some(6.0)
    );
    assert_eq!(
        value(&t, "nhiscope_losses_total{cause=\"store_backlog\"}"),
        Some(2.0)
    );
}

#[test]
fn the_exposition_is_prometheus_text_with_help_and_type_for_every_family() {
    let m = Arc::new(Metrics::new());
    let t = render(&m);
    assert!(
        t.contains(&format!(
            "nhiscope_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{t}"
    );
    assert!(!t.contains("# EOF"), "not OpenMetrics: {t}");
    let mut families = 0;
    for line in t.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().expect("name");
        assert!(name.starts_with("nhiscope_"), "{line}");
        let typed = t
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .find(|l| l.split(' ').next() == Some(name));
        let typed = typed.unwrap_or_else(|| panic!("no # TYPE for {name}"));
        if typed.ends_with(" counter") {
            assert!(name.ends_with("_total"), "{name}");
        } else {
            assert!(!name.ends_with("_total"), "{name} is not a counter");
        }
        families += 1;
    }
    assert!(families > 30, "{t}");
}

#[test]
fn health_says_why_it_fails() {
    let m = Metrics::new();
    let Health::Failing(why) = m.health() else {
        panic!("healthy before ready")
    };
    assert!(why.contains("not attached"), "{why}");
    m.set_ready(12);
    let Health::Ok(why) = m.health() else {
        panic!("not healthy once ready")
    };
    assert!(why.contains("12 probes"), "{why}");
    let later = m.started.elapsed() + STALL_LIMIT + Duration::from_secs(2);
    let Health::Failing(why) = m.health_at(later) else {
        panic!("healthy while the loop is stalled")
    };
    assert!(why.contains("has not turned"), "{why}");
    m.set_stopping();
    let Health::Failing(why) = m.health() else {
        panic!("healthy while stopping")
    };
    assert!(why.contains("stopping"), "{why}");
}

fn ask(m: &Arc<Metrics>, request: &str) -> http::Response {
    let head_end = request.find("\r\n\r\n").map_or(request.len(), |i| i + 4);
    http::respond(&request.as_bytes()[..head_end], m)
}

#[test]
fn requests_are_answered_by_path_and_method() {
    let m = Arc::new(Metrics::new());
    m.set_ready(3);
    let r = ask(&m, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, CONTENT_TYPE);
    assert!(r.body.contains("nhiscope_events_total"));
    let r = ask(&m, "GET /metrics?name[]=x HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    let r = ask(&m, "HEAD /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 200);
    let wire = String::from_utf8(r.bytes()).expect("utf8");
    assert!(wire.ends_with("\r\n\r\n"), "no body for HEAD: {wire:?}");
    assert!(wire.contains(&format!("Content-Length: {}\r\n", r.body.len())));
    assert_eq!(ask(&m, "GET /nope HTTP/1.1\r\n\r\n").status, 404);
    let r = ask(&m, "POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 405);
    assert!(String::from_utf8(r.bytes())
        .expect("utf8")
        .contains("Allow: GET, HEAD"));
    for bad in [
        "GET /metrics\r\n\r\n",
        "GARBAGE\r\n\r\n",
        "GET /metrics SPDY/3\r\n\r\n",
        "",
    ] {
        assert_eq!(ask(&m, bad).status, 400, "{bad:?}");
    }
    // The path is never echoed back.
    let r = ask(&m, "GET /<script>secret HTTP/1.1\r\n\r\n");
    assert!(!r.body.contains("secret"), "{r:?}");
}

/// The real server on a loopback port: slow and oversized clients are cut off, and the rest are
/// served meanwhile.
#[test]
fn the_server_bounds_what_clients_can_hold() {
    let listener = http::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let m = Arc::new(Metrics::new());
    m.set_ready(1);
    http::spawn(listener, Arc::clone(&m)).expect("spawn");

    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    };
    // Clients that connect and send nothing take every slot but one...
    let idle: Vec<_> = (0..http::MAX_CONNECTIONS - 1)
        .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
        .collect();
    // ...and a scrape is still served.
    let ok = get("/metrics");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("nhiscope_build_info"), "{ok}");

    // A request head larger than the limit gets 431, not an unbounded read.
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let big = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n",
        "a".repeat(http::MAX_REQUEST)
    );
    let _ = s.write_all(big.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 431 "), "{out}");

    // The idle ones are closed after the timeout (read returns end of file, not a hang).
    for mut c in idle {
        c.set_read_timeout(Some(http::CONNECTION_TIMEOUT * 3))
            .expect("timeout");
        let mut b = [0u8; 16];
        assert_eq!(c.read(&mut b).expect("closed, not timed out"), 0);
    }
    let health = get("/healthz");
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
}

/// With every slot held, one more connection is closed without an answer, and a server that is
/// not ready says why with a 503.
#[test]
fn connections_past_the_limit_are_closed_and_a_server_not_ready_answers_503() {
    let listener = http::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    http::spawn(listener, Arc::new(Metrics::new())).expect("spawn");
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(http::CONNECTION_TIMEOUT * 3))
            .expect("timeout");
        let _ = write!(s, "GET {path} HTTP/1.1\r\n\r\n");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let health = get("/healthz");
    assert!(health.starts_with("HTTP/1.1 503 "), "{health}");
    assert!(health.contains("not attached"), "{health}");

    let idle: Vec<_> = (0..http::MAX_CONNECTIONS)
        .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
        .collect();
    assert_eq!(get("/metrics"), "", "served past the limit");
    drop(idle);
}
