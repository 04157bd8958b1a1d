//! Widget tests against a `Buffer`, and whole-screen `TestBackend` snapshots (insta) of every
//! view, empty and error states included, at 80x24 (the size an analyst gets over SSH).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ratatui::{
    backend::TestBackend,
    buffer::Buffer,
    crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
    layout::Rect,
    style::Color,
    widgets::Widget,
    Terminal,
};

use super::*;
use crate::{
    domain::event::{DriftKind, Event, Kind, Ts, Verdict},
    publish::live::protocol::{
        ClickHouseHealth, Health, Hello, Message, NhiSummary, PrincipalsSummary, RegistrySummary,
        PROTOCOL_VERSION,
    },
    view::tui::{app::App, model::Update},
};

fn t(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap()
}

const NOW: &str = "2026-11-23T10:00:30Z";

fn registry() -> RegistrySummary {
    RegistrySummary {
        nhis: vec![
            NhiSummary {
                id: "billing-s3-writer".into(),
                owner: Some("team-billing".into()),
                credentials: vec!["/etc/billing/aws-credentials".into()],
                readers: Some(PrincipalsSummary {
                    exe: vec!["/usr/local/bin/billing-worker".into()],
                    uid: vec![1001],
                }),
                holders: None,
                endpoints: Some(vec![
                    "*.s3.eu-west-1.amazonaws.com port 443".into(),
                    "10.20.0.0/16 ports 5432,6432".into(),
                ]),
                endpoint_apis: Vec::new(),
                expires: Some("2026-12-31T00:00:00Z".into()),
                max_age: None,
                interactive: "deny".into(),
            },
            NhiSummary {
                id: "deploy-key".into(),
                owner: Some("platform".into()),
                credentials: vec!["/srv/deploy/.ssh/id_ed25519".into()],
                interactive: "deny".into(),
                ..NhiSummary::default()
            },
            NhiSummary {
                id: "ci-token".into(),
                credentials: vec!["/var/lib/ci/token".into()],
                interactive: "allow".into(),
                ..NhiSummary::default()
            },
        ],
    }
}

fn health() -> Health {
    Health {
        uptime_secs: 3725,
        events_total: 1234,
        events_per_sec: 4.5,
        live_clients: 1,
        ..Health::default()
    }
}

fn connected(registry: RegistrySummary) -> App {
    let mut app = App::new("/run/nhiscope/live.sock", t(NOW));
    app.on_update(Update::Connected);
    app.on_update(Update::Message(Message::Hello(Box::new(Hello {
        version: PROTOCOL_VERSION,
        host: "web-1".into(),
        pid: 812,
        registry,
        health: health(),
    }))));
    app
}

fn open(ts: &str, nhi: Option<&str>, exe: &str, pid: u32, uid: u32, path: &str) -> Event {
    let mut e = Event::bare(Kind::Open, Verdict::Ok);
    e.ts = Ts::parse_rfc3339(&format!("2026-11-23T{ts}.123456789Z")).unwrap();
    e.host = "web-1".into();
    e.nhi = nhi.map(Into::into);
    e.exe = exe.into();
    e.comm = exe
        .rsplit('/')
        .next()
        .unwrap()
        .chars()
        .take(15)
        .collect::<String>()
        .into();
    e.pid = pid;
    e.uid = uid;
    e.path = Some(path.into());
    e.result = Some(3);
    e
}

fn connect(ts: &str, nhi: &str, exe: &str, pid: u32, addr: &str, port: u16) -> Event {
    let mut e = open(ts, Some(nhi), exe, pid, 1001, "");
    e.kind = Kind::Connect;
    e.path = None;
    e.result = None;
    e.daddr = Some(addr.parse().unwrap());
    e.dport = Some(port);
    e
}

fn drift(mut e: Event, kind: DriftKind, reason: &str) -> Event {
    e.verdict = Verdict::Drift;
    e.drift = vec![kind];
    e.reason = reason.into();
    e
}

/// A host with some history: billing drifted twice, deploy-key is used in scope, ci-token is
/// idle, and someone read an unowned AWS credentials file.
fn busy() -> App {
    play(connected(registry()))
}

/// The uses of [`busy`], on `app`.
fn play(mut app: App) -> App {
    let worker = "/usr/local/bin/billing-worker";
    for (i, ts) in ["09:58:05", "09:59:10", "10:00:01", "10:00:12"]
        .iter()
        .enumerate()
    {
        app.on_event(open(
            ts,
            Some("billing-s3-writer"),
            worker,
            4100 + i as u32,
            1001,
            "/etc/billing/aws-credentials",
        ));
    }
    let mut s3 = connect(
        "10:00:02",
        "billing-s3-writer",
        worker,
        4102,
        "52.218.1.10",
        443,
    );
    s3.dns_names = Some(vec!["billing.s3.eu-west-1.amazonaws.com".into()]);
    app.on_event(s3);
    app.on_event(drift(
        open("10:00:20", Some("billing-s3-writer"), "/usr/bin/cat", 5230, 65534, "/etc/billing/aws-credentials"),
        DriftKind::ReaderOutOfScope,
        "/usr/bin/cat (pid 5230, uid 65534) opened /etc/billing/aws-credentials of NHI billing-s3-writer, \
         outside its readers (exe /usr/local/bin/billing-worker, uid 1001).",
    ));
    app.on_event(drift(
        connect("10:00:25", "billing-s3-writer", "/usr/bin/python3.11", 5301, "127.0.0.9", 8443),
        DriftKind::EndpointOutOfScope,
        "/usr/bin/python3.11 (pid 5301, uid 1001), a holder of NHI billing-s3-writer, connected to \
         127.0.0.9:8443, outside its endpoints.",
    ));
    app.on_event(open(
        "10:00:15",
        Some("deploy-key"),
        "/usr/bin/git",
        6001,
        0,
        "/srv/deploy/.ssh/id_ed25519",
    ));
    let mut unreg = open(
        "10:00:28",
        None,
        "/usr/local/bin/aws",
        7001,
        1000,
        "/home/ana/.aws/credentials",
    );
    unreg.verdict = Verdict::Unregistered;
    unreg.reason =
        "/home/ana/.aws/credentials matches a watched credential pattern and no NHI owns it."
            .into();
    app.on_event(unreg);
    let mut exit = Event::bare(Kind::Exit, Verdict::Ok);
    exit.ts = Ts::parse_rfc3339("2026-11-23T10:00:29.000000001Z").unwrap();
    exit.nhi = Some("billing-s3-writer".into());
    exit.exe = "/usr/bin/python3.11".into();
    exit.comm = "python3".into();
    exit.pid = 5301;
    app.on_event(exit);
    app
}

fn key(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn screen(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| f.render_widget(app, f.area())).unwrap();
    terminal
}

macro_rules! snapshot {
    ($name:literal, $app:expr) => {
        snapshot!($name, $app, 80, 24)
    };
    ($name:literal, $app:expr, $w:expr, $h:expr) => {
        insta::assert_snapshot!($name, screen(&$app, $w, $h).backend())
    };
}

/// The text of row `y` of a buffer.
fn row_text(buf: &Buffer, y: u16) -> String {
    (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect()
}

/// The screen of `app` at `width` x `height`, drawn into a plain buffer.
fn render(app: &App, width: u16, height: u16) -> Buffer {
    let area = Rect::new(0, 0, width, height);
    let mut buf = Buffer::empty(area);
    app.render(area, &mut buf);
    buf
}

/// The text of the first row holding `needle`.
#[track_caller]
fn row_with(buf: &Buffer, needle: &str) -> String {
    let (_, y) = find(buf, needle).unwrap_or_else(|| panic!("no row holds `{needle}`"));
    row_text(buf, y)
}

fn find(buf: &Buffer, needle: &str) -> Option<(u16, u16)> {
    (0..buf.area.height).find_map(|y| {
        let text = row_text(buf, y);
        text.find(needle)
            .map(|byte| (text[..byte].chars().count() as u16, y))
    })
}

#[test]
fn sparkline_scales_to_the_busiest_bucket_and_leaves_idle_ones_blank() {
    assert_eq!(spark(&[0, 1, 2, 4, 8]), " ▁▂▄█");
    assert_eq!(spark(&[0, 0]), "  ");
    assert_eq!(spark(&[3]), "█");
    assert_eq!(spark(&[]), "");
}

#[test]
fn long_paths_keep_their_tail() {
    assert_eq!(tail("/etc/billing/aws-credentials", 12), "…credentials");
    assert_eq!(tail("short", 12), "short");
    assert_eq!(tail("abc", 0), "");
}

#[test]
fn ages_and_uptimes_are_short() {
    let now = t(NOW);
    assert_eq!(ago(now, now - Duration::from_secs(5)), "5s");
    assert_eq!(ago(now, now - Duration::from_secs(150)), "2m");
    assert_eq!(
        ago(now, now + Duration::from_secs(5)),
        "0s",
        "a clock ahead is now"
    );
    assert_eq!(ago(now, now - Duration::from_secs(7200)), "2h");
    assert_eq!(uptime(3725), "1h02m");
    assert_eq!(uptime(65), "1m05s");
    assert_eq!(span(Duration::from_secs(86_400)), "24h");
    assert_eq!(span(Duration::from_secs(7 * 86_400)), "7d");
    assert_eq!(span(Duration::from_secs(900)), "15m");
    assert_eq!(span(Duration::from_secs(90)), "90s");
}

#[test]
fn a_drifting_nhi_says_drift_in_words_and_in_red() {
    let app = busy();
    let area = Rect::new(0, 0, 80, 24);
    let mut buf = Buffer::empty(area);
    (&app).render(area, &mut buf);
    let (_, y) = find(&buf, "billing-s3-writer").expect("the NHI has a row");
    let row = row_text(&buf, y);
    assert!(
        row.contains("▶ DRIFT"),
        "selected and marked in text: {row}"
    );
    let (x, _) = find(&buf, "▶ DRIFT").unwrap();
    assert_eq!(buf[(x + 2, y)].fg, Color::Red);
    let (_, y) = find(&buf, "deploy-key").unwrap();
    assert!(row_text(&buf, y).contains(" ok "), "{}", row_text(&buf, y));
    let (_, y) = find(&buf, "ci-token").unwrap();
    assert!(row_text(&buf, y).contains("idle"));
    let (_, y) = find(&buf, "(unregistered)").unwrap();
    assert!(row_text(&buf, y).contains("UNREG"));
    assert!(
        row_text(&buf, 0).contains("DRIFT 2"),
        "{}",
        row_text(&buf, 0)
    );
}

#[test]
fn the_detail_marks_the_out_of_scope_reader_and_endpoint() {
    let mut app = busy();
    key(&mut app, KeyCode::Enter);
    let buf = render(&app, 80, 24);
    let row = row_with(&buf, "127.0.0.9:8443");
    assert!(row.contains("OUT 127.0.0.9:8443 ×1"), "{row}");
    let row = row_with(&buf, "uid 65534");
    assert!(row.contains("OUT /usr/bin/cat uid 65534"), "{row}");
    // A name stands for its address.
    let row = row_with(&buf, "amazonaws.com:443");
    assert!(row.contains("in  …"), "{row}");
}

#[test]
fn a_tiny_terminal_gets_a_request_not_garbage() {
    let area = Rect::new(0, 0, 40, 8);
    let mut buf = Buffer::empty(area);
    (&busy()).render(area, &mut buf);
    assert!(row_text(&buf, 0).starts_with("nhiscope: the terminal is 40x8;"));
}

#[test]
fn snapshot_overview() {
    snapshot!("overview", busy());
}

#[test]
fn snapshot_overview_wide() {
    snapshot!("overview_120x30", busy(), 120, 30);
}

#[test]
fn snapshot_overview_empty() {
    snapshot!("overview_empty", connected(RegistrySummary::default()));
}

#[test]
fn snapshot_overview_filtered_to_nothing() {
    let mut app = busy();
    key(&mut app, KeyCode::Char('/'));
    for c in "nhi:nope".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    snapshot!("overview_filter_editing", app);
}

#[test]
fn snapshot_drift_feed() {
    let mut app = busy();
    key(&mut app, KeyCode::Char('2'));
    snapshot!("drift_feed", app);
}

#[test]
fn snapshot_drift_feed_empty() {
    let mut app = connected(registry());
    key(&mut app, KeyCode::Char('2'));
    snapshot!("drift_feed_empty", app);
}

#[test]
fn snapshot_stream() {
    let mut app = busy();
    key(&mut app, KeyCode::Char('3'));
    snapshot!("stream", app);
}

#[test]
fn snapshot_stream_paused_and_filtered() {
    let mut app = busy();
    key(&mut app, KeyCode::Char('3'));
    key(&mut app, KeyCode::Char('/'));
    for c in "verdict:drift".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Char('p'));
    app.on_event(open(
        "10:00:30",
        Some("deploy-key"),
        "/usr/bin/git",
        6002,
        0,
        "/srv/deploy/.ssh/id_ed25519",
    ));
    snapshot!("stream_paused_filtered", app);
}

#[test]
fn snapshot_stream_empty() {
    let mut app = connected(registry());
    key(&mut app, KeyCode::Char('3'));
    snapshot!("stream_empty", app);
}

#[test]
fn snapshot_detail() {
    let mut app = busy();
    key(&mut app, KeyCode::Enter);
    snapshot!("detail", app);
}

#[test]
fn snapshot_detail_from_the_drift_feed_at_120x40() {
    let mut app = busy();
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Enter);
    snapshot!("detail_120x40", app, 120, 40);
}

#[test]
fn snapshot_detail_unregistered() {
    let mut app = busy();
    key(&mut app, KeyCode::End);
    key(&mut app, KeyCode::Enter);
    snapshot!("detail_unregistered", app);
}

#[test]
fn snapshot_detail_idle() {
    let mut app = connected(registry());
    key(&mut app, KeyCode::Char('4'));
    snapshot!("detail_idle", app);
}

#[test]
fn snapshot_health() {
    let mut app = busy();
    for rate in [3, 5, 8, 4, 2, 9] {
        app.on_update(Update::Message(Message::Health {
            health: Box::new(Health {
                events_per_sec: f64::from(rate),
                ..health()
            }),
        }));
    }
    key(&mut app, KeyCode::Char('5'));
    snapshot!("health", app);
}

#[test]
fn snapshot_health_with_losses_and_clickhouse_down() {
    let mut app = busy();
    let mut h = health();
    h.kernel_drops = 12;
    h.kernel_drops_by_cause
        .insert("ringbuf_full_open".into(), 12);
    h.ringbuf_fill = Some(0.35);
    h.ringbuf_bytes = Some(16 << 20);
    h.clickhouse = Some(ClickHouseHealth {
        connected: false,
        lag_secs: Some(42.0),
        spool_bytes: Some(3 << 20),
        spool_rows: Some(5120),
        last_error: Some("connection refused".into()),
    });
    app.on_update(Update::Message(Message::Health {
        health: Box::new(h),
    }));
    key(&mut app, KeyCode::Char('5'));
    snapshot!("health_losses_clickhouse_down", app);
}

#[test]
fn health_says_when_dns_answers_were_not_believed() {
    let mut app = busy();
    app.on_update(Update::Message(Message::Health {
        health: Box::new(health()),
    }));
    key(&mut app, KeyCode::Char('5'));
    assert!(find(&render(&app, 100, 30), "REJECTED").is_none());
    let mut h = health();
    h.dns_rejected = 7;
    app.on_update(Update::Message(Message::Health {
        health: Box::new(h),
    }));
    let line = row_with(&render(&app, 100, 30), "REJECTED");
    assert!(
        line.contains("DNS") && line.contains("REJECTED 7"),
        "{line}"
    );
}

#[test]
fn health_names_what_this_host_leaves_unseen() {
    let mut app = busy();
    app.on_update(Update::Message(Message::Health {
        health: Box::new(health()),
    }));
    key(&mut app, KeyCode::Char('5'));
    assert!(find(&render(&app, 120, 30), "NOT SEEN").is_none());
    let mut h = health();
    h.unseen = vec!["32-bit system calls (int 0x80) are accepted".into()];
    app.on_update(Update::Message(Message::Health {
        health: Box::new(h),
    }));
    let line = row_with(&render(&app, 120, 30), "NOT SEEN");
    assert!(line.contains("32-bit system calls"), "{line}");
}

#[test]
fn snapshot_help() {
    let mut app = busy();
    key(&mut app, KeyCode::Char('?'));
    snapshot!("help", app);
}

#[test]
fn snapshot_daemon_not_running() {
    let mut app = App::new("/run/nhiscope/live.sock", t(NOW));
    app.on_update(Update::Down {
        reason:
            "daemon not running: no socket at /run/nhiscope/live.sock (start `nhiscope daemon`)"
                .into(),
        attempt: 3,
        retry_in: Duration::from_secs(1),
    });
    snapshot!("daemon_not_running", app);
}

#[test]
fn snapshot_permission_denied() {
    let mut app = App::new("/run/nhiscope/live.sock", t(NOW));
    app.on_update(Update::Down {
        reason: crate::view::tui::client::unreachable_reason(
            std::path::Path::new("/run/nhiscope/live.sock"),
            &std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        ),
        attempt: 1,
        retry_in: Duration::from_millis(250),
    });
    snapshot!("permission_denied", app);
}

#[test]
fn snapshot_connecting() {
    snapshot!("connecting", App::new("/run/nhiscope/live.sock", t(NOW)));
}

#[test]
fn snapshot_disconnected_keeps_the_data() {
    let mut app = busy();
    app.on_update(Update::Down {
        reason: "the daemon closed the connection".into(),
        attempt: 2,
        retry_in: Duration::from_secs(2),
    });
    key(&mut app, KeyCode::Char('2'));
    snapshot!("disconnected_drift_feed", app);
}

#[test]
fn snapshot_smallest_drift_feed_and_detail() {
    let mut app = busy();
    key(&mut app, KeyCode::Char('2'));
    snapshot!("drift_feed_60x12", app, 60, 12);
    key(&mut app, KeyCode::Enter);
    snapshot!("detail_60x12", app, 60, 12);
}

// History from ClickHouse, merged with the live feed.

use crate::{
    publish::store::read::{ActivityCount, Dashboard, Heartbeat, HostLoss, UseCount},
    view::tui::{
        app::{History, HistoryState},
        model::{HostSummary, Snapshot},
    },
};

/// The count the store reads for `n` uses like `e`, the newest at `e.ts`.
fn use_row(e: &Event, n: u64) -> UseCount {
    UseCount {
        nhi: e.nhi.as_deref().unwrap_or_default().to_owned(),
        verdict: e.verdict,
        kind: e.kind,
        host: e.host.to_string(),
        exe: e.exe.to_string(),
        uid: e.uid,
        path: e.path.clone().unwrap_or_default(),
        daddr: e.daddr.map(|a| a.to_string()).unwrap_or_default(),
        dport: e.dport,
        dns_names: e.dns_names.clone().unwrap_or_default(),
        drift: e.drift.clone(),
        wire: crate::domain::wire::WireFields {
            alpn: None,
            tls_version: None,
            ..(*e.wire).clone()
        },
        n,
        last_ns: e.ts.as_nanos(),
    }
}

fn on_host(mut e: Event, host: &str) -> Event {
    e.host = host.into();
    e
}

fn snapshot_of(uses: &[(&Event, u64)], fleet: &[&str]) -> Snapshot {
    let f = Dashboard {
        uses: uses.iter().map(|(e, n)| use_row(e, *n)).collect(),
        ..Dashboard::default()
    };
    let mut s = Snapshot::build(f, t(NOW));
    for h in fleet {
        if !s.hosts.iter().any(|x| x.host == *h) {
            s.hosts.push(HostSummary {
                host: (*h).into(),
                ..HostSummary::default()
            });
        }
    }
    s.hosts.sort_by(|a, b| a.host.cmp(&b.host));
    s
}

fn with_history(app: App, hosts: &[&str]) -> App {
    app.with_history(History::new(
        Duration::from_secs(86_400),
        hosts.iter().map(|h| (*h).to_owned()).collect(),
    ))
}

fn reads(app: &App, nhi: &str) -> u64 {
    app.stats
        .get(&crate::view::tui::model::Subject::Nhi(nhi.into()))
        .map_or(0, |s| s.reads)
}

const WORKER: &str = "/usr/local/bin/billing-worker";
const CRED: &str = "/etc/billing/aws-credentials";

#[test]
fn history_and_live_count_each_use_once() {
    let mut app = with_history(connected(registry()), &[]);
    let a = open(
        "10:00:01",
        Some("billing-s3-writer"),
        WORKER,
        4100,
        1001,
        CRED,
    );
    let b = open(
        "10:00:20",
        Some("billing-s3-writer"),
        WORKER,
        4101,
        1001,
        CRED,
    );
    let other = drift(
        on_host(
            open(
                "09:30:00",
                Some("billing-s3-writer"),
                "/usr/bin/cat",
                77,
                0,
                CRED,
            ),
            "web-2",
        ),
        DriftKind::ReaderOutOfScope,
        "outside its readers",
    );
    // Live first: counted at once, before ClickHouse has it.
    app.on_event(a.clone());
    assert_eq!(reads(&app, "billing-s3-writer"), 1);
    // The snapshot has `a` (web-1) and five uses on web-2: a is not counted twice.
    app.on_update(Update::History(Box::new(snapshot_of(
        &[(&a, 1), (&other, 5)],
        &[],
    ))));
    assert_eq!(reads(&app, "billing-s3-writer"), 6);
    assert_eq!(app.history.as_ref().unwrap().pending(), 0);
    let s = &app.stats[&crate::view::tui::model::Subject::Nhi("billing-s3-writer".into())];
    assert_eq!(s.drifts, 5);
    assert_eq!(s.hosts.len(), 2, "{:?}", s.hosts);
    // `b` arrives live; a snapshot taken before it was stored must not lose it...
    app.on_event(b.clone());
    assert_eq!(reads(&app, "billing-s3-writer"), 7);
    app.on_update(Update::History(Box::new(snapshot_of(
        &[(&a, 1), (&other, 5)],
        &[],
    ))));
    assert_eq!(reads(&app, "billing-s3-writer"), 7, "b is still counted");
    assert_eq!(app.history.as_ref().unwrap().pending(), 1);
    // ...and one taken after must not count it twice.
    let f = Dashboard {
        uses: vec![use_row(&b, 2), use_row(&other, 5)],
        ..Dashboard::default()
    };
    app.on_update(Update::History(Box::new(Snapshot::build(f, t(NOW)))));
    assert_eq!(reads(&app, "billing-s3-writer"), 7);
    assert_eq!(app.history.as_ref().unwrap().pending(), 0);
    // A live event the snapshot already holds (the feed is behind) is not counted again.
    app.on_event(a);
    assert_eq!(reads(&app, "billing-s3-writer"), 7);
}

#[test]
fn history_of_some_hosts_leaves_the_others_out() {
    let mut app = with_history(connected(registry()), &["web-2"]);
    app.on_event(open(
        "10:00:01",
        Some("deploy-key"),
        "/usr/bin/git",
        1,
        0,
        "/k",
    ));
    assert_eq!(reads(&app, "deploy-key"), 0, "web-1 is not asked for");
    app.on_event(on_host(
        open("10:00:02", Some("deploy-key"), "/usr/bin/git", 2, 0, "/k"),
        "web-2",
    ));
    assert_eq!(reads(&app, "deploy-key"), 1);
    assert_eq!(app.stream_items().len(), 1);
}

#[test]
fn the_drift_feed_merges_history_and_live_newest_first_each_once() {
    let mut app = with_history(connected(registry()), &[]);
    let old = drift(
        on_host(
            connect(
                "09:00:00",
                "billing-s3-writer",
                "/usr/bin/curl",
                9,
                "1.2.3.4",
                443,
            ),
            "web-2",
        ),
        DriftKind::EndpointOutOfScope,
        "outside its endpoints",
    );
    let live = drift(
        connect(
            "10:00:25",
            "billing-s3-writer",
            "/usr/bin/curl",
            10,
            "5.6.7.8",
            443,
        ),
        DriftKind::EndpointOutOfScope,
        "outside its endpoints",
    );
    app.on_event(live.clone());
    let mut snap = snapshot_of(&[(&old, 1)], &[]);
    // ClickHouse already has the live one too: it is listed once.
    snap.drifts = vec![live.clone(), old.clone()];
    snap.stream = vec![live.clone(), old.clone()];
    app.on_update(Update::History(Box::new(snap)));
    let feed: Vec<Ts> = app.drift_items().iter().map(|e| e.ts).collect();
    assert_eq!(feed, [live.ts, old.ts]);
    assert_eq!(app.stream_items().len(), 2);
}

#[test]
fn a_snapshot_counts_uses_activity_and_the_fleet() {
    let a = open("10:00:01", Some("deploy-key"), "/usr/bin/git", 1, 0, "/k");
    let b = on_host(
        open("10:00:05", Some("deploy-key"), "/usr/bin/git", 2, 0, "/k"),
        "web-2",
    );
    let f = Dashboard {
        uses: vec![use_row(&a, 3), use_row(&b, 4)],
        activity: vec![ActivityCount {
            nhi: "deploy-key".into(),
            bucket: a.ts.as_nanos() / 10_000_000_000,
            n: 7,
        }],
        heartbeats: vec![Heartbeat {
            host: "web-1".into(),
            at: UNIX_EPOCH + Duration::from_secs(a.ts.as_nanos() / 1_000_000_000),
            version: "0.1.0".into(),
        }],
        losses: vec![HostLoss {
            host: "web-3".into(),
            cause: "ringbuf_full_open".into(),
            lost: 12,
        }],
        ..Dashboard::default()
    };
    let s = Snapshot::build(f, t(NOW));
    let st = &s.stats[&crate::view::tui::model::Subject::Nhi("deploy-key".into())];
    assert_eq!(st.reads, 7);
    assert_eq!(st.series(t(NOW), 6).iter().sum::<u64>(), 7);
    assert_eq!(s.watermarks["web-1"], a.ts.as_nanos());
    assert_eq!(s.watermarks["web-2"], b.ts.as_nanos());
    let hosts: Vec<&str> = s.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(hosts, ["web-1", "web-2", "web-3"]);
    assert_eq!(s.hosts[2].lost["ringbuf_full_open"], 12);
    assert!(s.hosts[0].last_heartbeat.is_some());
    assert!(!s.truncated);
}

/// A fleet of three hosts from ClickHouse, read on web-1 whose daemon is live.
fn fleet() -> App {
    let mut app = play(with_history(connected(registry()), &[]));
    let cat = drift(
        on_host(
            open(
                "09:40:00",
                Some("billing-s3-writer"),
                "/usr/bin/cat",
                77,
                0,
                CRED,
            ),
            "web-2",
        ),
        DriftKind::ReaderOutOfScope,
        "/usr/bin/cat (pid 77, uid 0) opened /etc/billing/aws-credentials of NHI \
         billing-s3-writer, outside its readers.",
    );
    let git = on_host(
        open(
            "09:50:00",
            Some("gitlab-runner"),
            "/usr/bin/git",
            88,
            999,
            "/etc/gitlab-runner/token",
        ),
        "web-3",
    );
    let mut snap = snapshot_of(&[(&cat, 3), (&git, 40)], &["web-1", "web-2", "web-3"]);
    snap.hosts[0].last_heartbeat = Some(t(NOW) - Duration::from_secs(4));
    snap.hosts[1].last_heartbeat = Some(t(NOW) - Duration::from_secs(600));
    snap.hosts[2].last_heartbeat = Some(t(NOW) - Duration::from_secs(7));
    snap.hosts[2].lost.insert("ringbuf_full_open".into(), 12);
    snap.hosts[2].version = "0.1.0".into();
    snap.drifts = vec![cat.clone()];
    snap.stream = vec![git, cat];
    app.on_update(Update::History(Box::new(snap)));
    app
}

#[test]
fn snapshot_overview_of_a_fleet() {
    snapshot!("overview_fleet", fleet());
}

#[test]
fn snapshot_health_of_a_fleet() {
    let mut app = fleet();
    key(&mut app, KeyCode::Char('5'));
    snapshot!("health_fleet", app, 100, 30);
}

#[test]
fn a_ring_buffer_near_full_is_an_alert_in_words_and_red() {
    let mut app = busy();
    let mut h = health();
    h.ringbuf_fill = Some(0.93);
    h.ringbuf_bytes = Some(8 << 20);
    app.on_update(Update::Message(Message::Health {
        health: Box::new(h),
    }));
    key(&mut app, KeyCode::Char('5'));
    let buf = render(&app, 100, 30);
    let row = row_with(&buf, "ring buffer");
    assert!(row.contains("93% FULL of 8.0 MiB"), "{row}");
    let (x, y) = find(&buf, "93% FULL").expect("the alert");
    assert_eq!(buf[(x, y)].fg, Color::Red);
}

#[test]
fn a_silent_host_is_marked_in_words() {
    let mut app = fleet();
    key(&mut app, KeyCode::Char('5'));
    let buf = render(&app, 100, 30);
    let row = row_with(&buf, "web-2");
    assert!(row.contains("SILENT"), "{row}");
    let row = row_with(&buf, "web-3");
    assert!(
        row.contains("LOSS 12") && row.contains("nhiscope 0.1.0"),
        "{row}"
    );
    let row = row_with(&buf, "web-1  ");
    assert!(!row.contains("SILENT"), "{row}");
}

#[test]
fn snapshot_history_down_while_showing_data() {
    let mut app = fleet();
    app.on_update(Update::HistoryDown {
        reason: "ClickHouse http://127.0.0.1:8123: connection refused".into(),
        attempt: 3,
        retry_in: Duration::from_secs(4),
    });
    assert!(matches!(
        app.history.as_ref().unwrap().state,
        HistoryState::Down { .. }
    ));
    snapshot!("history_down_with_data", app);
}

#[test]
fn snapshot_history_only_and_clickhouse_unreachable() {
    let mut app =
        with_history(App::new("/run/nhiscope/live.sock", t(NOW)), &["web-2"]).without_live();
    app.on_update(Update::HistoryDown {
        reason: "ClickHouse http://127.0.0.1:8123: connection refused".into(),
        attempt: 1,
        retry_in: Duration::from_secs(1),
    });
    snapshot!("history_only_unreachable", app);
}

#[test]
fn snapshot_history_only_with_the_daemon_down() {
    let mut app = with_history(App::new("/run/nhiscope/live.sock", t(NOW)), &[]);
    app.on_update(Update::Down {
        reason:
            "daemon not running: no socket at /run/nhiscope/live.sock (start `nhiscope daemon`)"
                .into(),
        attempt: 2,
        retry_in: Duration::from_millis(500),
    });
    app.on_update(Update::History(Box::new(snapshot_of(
        &[(
            &on_host(
                open(
                    "09:50:00",
                    Some("gitlab-runner"),
                    "/usr/bin/git",
                    88,
                    999,
                    "/t",
                ),
                "web-3",
            ),
            40,
        )],
        &["web-3"],
    ))));
    snapshot!("history_with_daemon_down", app);
}

// The APIs of an NHI: declared on its endpoints, observed in its holders' requests.

/// A request of billing's worker to `addr:port`: TLS with `sni`, or plaintext `http`.
fn request(
    ts: &str,
    addr: &str,
    port: u16,
    sni: Option<&str>,
    http: Option<(&str, &str, &str)>,
) -> Event {
    let mut e = connect(ts, "billing-s3-writer", WORKER, 4200, addr, port);
    e.kind = Kind::Request;
    e.dns_names = Some(vec![]);
    e.wire.sni = sni.map(Into::into);
    if sni.is_some() {
        e.wire.alpn = Some(vec!["h2".into()]);
        e.wire.tls_version = Some("1.3".into());
    }
    if let Some((m, host, path)) = http {
        e.wire.http_method = Some(m.into());
        e.wire.http_host = Some(host.into());
        e.wire.http_path = Some(path.into());
    }
    e
}

/// billing's registry entry with APIs on its endpoints; requests in scope and out of it, some
/// from ClickHouse (on web-2), some live.
fn with_apis() -> App {
    let mut reg = registry();
    reg.nhis[0].endpoints = Some(vec![
        "*.s3.eu-west-1.amazonaws.com port 443".into(),
        "10.20.0.0/16 port 8080".into(),
    ]);
    reg.nhis[0].endpoint_apis = vec![
        vec!["sni *.s3.eu-west-1.amazonaws.com".into()],
        vec!["methods GET, POST".into(), "paths /v1/charges/*".into()],
    ];
    let mut app = with_history(connected(reg), &[]);
    let s3 = "bucket.s3.eu-west-1.amazonaws.com";
    let stored_tls = on_host(
        request("09:40:00", "52.218.1.10", 443, Some(s3), None),
        "web-2",
    );
    let stored_http = on_host(
        request(
            "09:41:00",
            "10.20.1.7",
            8080,
            None,
            Some(("GET", "api.internal:8080", "/v1/charges/ch_1")),
        ),
        "web-2",
    );
    app.on_update(Update::History(Box::new(snapshot_of(
        &[(&stored_tls, 40), (&stored_http, 7)],
        &[],
    ))));
    app.on_event(request("10:00:02", "52.218.1.10", 443, Some(s3), None));
    app.on_event(drift(
        request("10:00:03", "52.218.1.10", 443, Some("api.github.com"), None),
        DriftKind::NameMismatch,
        "the server name api.github.com is not among the names DNS gave for 52.218.1.10",
    ));
    app.on_event(drift(
        request(
            "10:00:04",
            "10.20.1.7",
            8080,
            None,
            Some(("DELETE", "api.internal:8080", "/v1/charges/ch_1")),
        ),
        DriftKind::ApiOutOfScope,
        "DELETE /v1/charges/ch_1 is outside the declared API",
    ));
    key(&mut app, KeyCode::Enter);
    app
}

#[test]
fn the_detail_shows_declared_apis_beside_those_observed_live_and_in_the_history() {
    let app = with_apis();
    let buf = render(&app, 120, 40);
    // Declared: under each endpoint, the APIs it allows.
    let row = row_with(&buf, "sni *.s3.eu-west-1.amazonaws.com");
    assert!(row.contains("│    sni *.s3"), "{row}");
    assert!(row_with(&buf, "methods GET, POST").contains("│    methods GET, POST"));
    assert!(row_with(&buf, "paths /v1/charges/*").contains("│    paths /v1/charges/*"));
    // Observed: the history's 40 and the live one counted together, in scope.
    let row = row_with(&buf, "bucket.s3.eu-west-1.amazonaws.com (TLS)");
    assert!(
        row.contains("in  bucket.s3.eu-west-1.amazonaws.com (TLS) ×41"),
        "{row}"
    );
    let row = row_with(&buf, "api.internal GET /v1/charges/ch_1");
    assert!(
        row.contains("in  api.internal GET /v1/charges/ch_1 ×7"),
        "{row}"
    );
    // Out of scope, live: another name on the wire, a method not declared.
    let row = row_with(&buf, "api.github.com (TLS)");
    assert!(row.contains("OUT api.github.com (TLS) ×1"), "{row}");
    let row = row_with(&buf, "api.internal DELETE");
    assert!(
        row.contains("OUT api.internal DELETE /v1/charges/ch_1 ×1"),
        "{row}"
    );
    // A request is not a use of its own: the connections are counted by the connects.
    let row = row_with(&buf, "connections");
    assert!(row.contains("reads 0 · connections 0"), "{row}");
    assert!(row.contains("DRIFT 2"), "{row}");
}

#[test]
fn snapshot_detail_with_apis() {
    snapshot!("detail_apis_120x40", with_apis(), 120, 40);
}
