//! The ClickHouse store against a real server (Debian's 18.16, started by the harness): events
//! read back exactly, outages, crashes with a spool, a full spool, bad credentials.
//!
//! The store is driven through its API (`nhiscope::publish::store`), in a tokio runtime of the test's
//! own; a "crash" is the runtime dropped without `shutdown` (everything in memory is gone, the
//! files stay), or a child process killed with SIGKILL.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nhiscope::{
    domain::event::{Event, Kind, Verdict},
    domain::wire::Readout,
    publish::store::{
        client::admin_client,
        queries::{self, Param},
        row::EventRow,
        schema::{Dialect, Schema},
        sink, Store, StoreConfig, StoreHandle,
    },
};
use nhiscope_tests::{
    clickhouse::ClickHouse,
    faults::RejectingProxy,
    fixtures::{days_back_to_fixtures, events},
    require_root_bpf, temp_dir, Daemon,
};

fn config(ch: &ClickHouse, spool: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(&ch.url()).unwrap_or_else(|e| panic!("{e}"));
    c.spool_dir = spool.to_path_buf();
    c.batch_interval = Duration::from_millis(100);
    c.retry_max = Duration::from_millis(500);
    c.request_timeout = Duration::from_secs(5);
    c
}

fn runtime() -> tokio::runtime::Runtime {
    let _ = env_logger::builder()
        .is_test(true)
        .parse_filters("info")
        .try_init();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio: {e}"))
}

fn legacy_schema(database: &str) -> Schema {
    Schema {
        database: database.to_owned(),
        cluster: None,
        retention_days: None,
        dialect: Dialect::Legacy,
    }
}

/// Every event of `host` read back through the shipped query, oldest first.
fn read_back(ch: &ClickHouse, config: &StoreConfig, host: &str) -> Vec<EventRow> {
    let client = admin_client(config).with_database(&config.database);
    let schema = legacy_schema(&config.database);
    runtime()
        .block_on(queries::fetch_events(
            &client,
            &schema,
            &queries::EVENTS_BY_HOST,
            &[
                Param::from(host),
                Param::U64(0),
                Param::U64(4_000_000_000),
                Param::U64(10_000_000),
            ],
        ))
        .unwrap_or_else(|e| panic!("reading events back: {e}\n{}", ch.logs()))
}

/// Asserts that every event of `host` with a pid in `expected` is stored exactly once (no
/// `FINAL`: duplicates would show), and nothing else is.
#[track_caller]
fn assert_stored_once(ch: &ClickHouse, host: &str, expected: &[u64]) {
    let rows = ch.query_json(&format!(
        "SELECT pid, count() AS n FROM nhiscope.events WHERE host = '{host}' GROUP BY pid"
    ));
    let mut seen: HashMap<u64, u64> = HashMap::new();
    for r in rows {
        seen.insert(
            r["pid"].as_u64().unwrap_or(u64::MAX),
            r["n"].as_u64().unwrap_or(0),
        );
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "stored more than once (pid, copies): {doubled:?}"
    );
    let missing: Vec<_> = expected.iter().filter(|p| !seen.contains_key(p)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} events missing, first: {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(seen.len(), expected.len(), "unexpected extra events");
}

#[test]
fn events_are_stored_and_read_back_exactly() {
    let Some(ch) = ClickHouse::start("roundtrip") else {
        return;
    };
    let spool = temp_dir("store-roundtrip");
    let config = config(&ch, &spool);
    let sent = events("host-a", 0..500);
    let report = runtime().block_on(async {
        let store = Store::start(config.clone(), "host-a").unwrap_or_else(|e| panic!("{e}"));
        store.send(&sent[..250]);
        store.heartbeat(&[("records", 500), ("events", 500)]);
        store.send(&sent[250..]);
        store.shutdown().await.unwrap_or_else(|e| panic!("{e}"))
    });
    assert_eq!(report.spooled_batches, 0, "{report:?}");
    assert_eq!(report.stats.accepted, 500);
    let back: Vec<Event> = read_back(&ch, &config, "host-a")
        .iter()
        .map(|r| r.event.clone())
        .collect();
    assert_eq!(back.len(), sent.len());
    for (got, want) in back.iter().zip(&sent) {
        assert_eq!(got, want);
    }
    let agents = ch.query_json("SELECT host, counter_names, counter_values FROM nhiscope.agents");
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(agents[0]["counter_names"][0], "records");
    assert_eq!(agents[0]["counter_values"][0], 500);
}

/// Waits until the store's spool is empty (ClickHouse took everything), or panics.
async fn wait_drained(store: &StoreHandle, ch: &ClickHouse, within: Duration) {
    let started = Instant::now();
    loop {
        let s = store.stats();
        if s.spool_rows == 0 && s.healthy {
            return;
        }
        if started.elapsed() > within {
            panic!(
                "the spool did not drain within {within:?}: {s:?}\n{}",
                ch.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_retried_batch_is_stored_once() {
    let Some(ch) = ClickHouse::start("dedup") else {
        return;
    };
    let spool = temp_dir("store-dedup");
    let config = config(&ch, &spool);
    let rows: Vec<EventRow> = events("host-d", 0..1000)
        .iter()
        .enumerate()
        .map(|(i, e)| EventRow::from_event(e, 77, i as u64))
        .collect();
    let batch = sink::Batch::new("host-d", 77, sink::Rows::Events(rows.clone()));
    let count = || ch.query_u64("SELECT count() FROM nhiscope.events WHERE host = 'host-d'");
    runtime().block_on(async {
        let (conn, _) = sink::Conn::open(&config)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", ch.logs()));

        // The first attempt "timed out" after the server stored it: the retry is uncertain.
        assert_eq!(
            conn.insert(&batch).await.unwrap_or_else(|e| panic!("{e}")),
            1000
        );
        let mut retry = batch.clone();
        retry.uncertain = true;
        assert_eq!(
            conn.insert(&retry).await.unwrap_or_else(|e| panic!("{e}")),
            0
        );
        assert_eq!(count(), 1000, "the retry must not store anything again");

        // A retry of a batch of which only some rows arrived stores exactly the rest.
        let other: Vec<EventRow> = rows
            .iter()
            .map(|r| EventRow {
                run_id: 78,
                ..r.clone()
            })
            .collect();
        let half = sink::Batch::new("host-d", 78, sink::Rows::Events(other[..400].to_vec()));
        assert_eq!(
            conn.insert(&half).await.unwrap_or_else(|e| panic!("{e}")),
            400
        );
        let mut whole = sink::Batch::new("host-d", 78, sink::Rows::Events(other));
        whole.uncertain = true;
        assert_eq!(
            conn.insert(&whole).await.unwrap_or_else(|e| panic!("{e}")),
            600
        );
        assert_eq!(count(), 2000);

        // The last line of defence: a copy inserted blindly (no check) collapses on merge,
        // and FINAL never shows it.
        assert_eq!(
            conn.insert(&batch).await.unwrap_or_else(|e| panic!("{e}")),
            1000
        );
        assert_eq!(count(), 3000, "a blind insert does store a second copy...");
        assert_eq!(
            ch.query_u64("SELECT count() FROM nhiscope.events FINAL WHERE host = 'host-d'"),
            2000,
            "...which FINAL hides"
        );
        ch.query("OPTIMIZE TABLE nhiscope.events FINAL");
        assert_eq!(count(), 2000, "...and a merge removes");
    });
}

#[test]
fn an_outage_mid_stream_loses_and_doubles_nothing() {
    let Some(mut ch) = ClickHouse::start("outage") else {
        return;
    };
    let spool = temp_dir("store-outage");
    let config = config(&ch, &spool);
    let total = 3000u64;
    let report = runtime().block_on(async {
        let store = Store::start(config.clone(), "host-o").unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        let mut stopped = false;
        for chunk in 0..total / 10 {
            store.send(&events("host-o", chunk * 10..chunk * 10 + 10));
            let t = started.elapsed();
            if !stopped && t > Duration::from_millis(700) {
                // Killed while inserts are in flight: some outcomes are unknown.
                ch.stop();
                stopped = true;
            }
            if stopped && !ch.is_running() && t > Duration::from_millis(2000) {
                ch.restart();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(store.stats().errors > 0, "the outage went unnoticed");
        wait_drained(&store, &ch, Duration::from_secs(15)).await;
        store.shutdown().await.unwrap_or_else(|e| panic!("{e}"))
    });
    assert_eq!(report.spooled_batches, 0, "{report:?}");
    assert!(
        report.stats.spooled_rows > 0,
        "nothing was spooled: {report:?}"
    );
    let pids: Vec<u64> = (0..total).collect();
    assert_stored_once(&ch, "host-o", &pids);
}

#[test]
fn a_crash_with_a_full_memory_and_a_spool_is_replayed_and_accounted() {
    let Some(mut ch) = ClickHouse::start("crash") else {
        return;
    };
    let spool = temp_dir("store-crash");
    let mut c = config(&ch, &spool);
    // Batches of 1000, cut by size only: what is pending when the store dies is known.
    c.batch_rows = 1000;
    c.batch_interval = Duration::from_secs(3600);
    ch.stop();
    {
        let rt = runtime();
        rt.block_on(async {
            let store = Store::start(c.clone(), "host-c").unwrap_or_else(|e| panic!("{e}"));
            store.send(&events("host-c", 0..2500));
            // Let the writer spool the two full batches and checkpoint.
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert_eq!(store.stats().spool_rows, 2000, "{:?}", store.stats());
            // The "crash": the runtime goes away with 500 events in memory, no shutdown.
            std::mem::forget(store);
        });
    }
    ch.restart();
    runtime().block_on(async {
        let store = Store::start(c.clone(), "host-c").unwrap_or_else(|e| panic!("{e}"));
        wait_drained(&store, &ch, Duration::from_secs(15)).await;
        store.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    });
    let pids: Vec<u64> = (0..2000).collect();
    assert_stored_once(&ch, "host-c", &pids);
    let losses =
        ch.query_json("SELECT cause, count, reason FROM nhiscope.losses WHERE host = 'host-c'");
    assert_eq!(losses.len(), 1, "{losses:?}");
    assert_eq!(losses[0]["cause"], "unclean_stop");
    assert_eq!(losses[0]["count"], 500, "{losses:?}");
}

#[test]
fn a_full_spool_counts_what_it_drops_in_a_loss_row() {
    let Some(mut ch) = ClickHouse::start("spoolfull") else {
        return;
    };
    let spool = temp_dir("store-spoolfull");
    let mut c = config(&ch, &spool);
    c.batch_rows = 50;
    // About 100 events' worth of JSON.
    c.spool_max_bytes = 60_000;
    ch.stop();
    let total = 1000u64;
    runtime().block_on(async {
        let store = Store::start(c.clone(), "host-f").unwrap_or_else(|e| panic!("{e}"));
        for chunk in 0..total / 50 {
            store.send(&events("host-f", chunk * 50..chunk * 50 + 50));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Spooling runs off the caller's thread, on the blocking pool: wait until every batch
        // was spooled or counted.
        let started = Instant::now();
        let mut s = store.stats();
        while s.dropped_events + s.spool_rows < total && started.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s = store.stats();
        }
        assert!(s.dropped_events > 0 && s.spool_rows > 0, "{s:?}");
        assert_eq!(s.dropped_events + s.spool_rows, total, "{s:?}");
        ch.restart();
        wait_drained(&store, &ch, Duration::from_secs(15)).await;
        store.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    });
    let stored = ch.query_u64("SELECT count() FROM nhiscope.events WHERE host = 'host-f'");
    let lost = ch.query_json(
        "SELECT cause, sum(count) AS n FROM nhiscope.losses WHERE host = 'host-f' GROUP BY cause",
    );
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0]["cause"], "spool_full");
    assert_eq!(
        stored + lost[0]["n"].as_u64().unwrap_or(0),
        total,
        "stored {stored}, {lost:?}"
    );
    assert_eq!(
        ch.query_u64("SELECT uniqExact(pid) FROM nhiscope.events WHERE host = 'host-f'"),
        stored,
        "duplicates"
    );
}

#[test]
fn wrong_credentials_keep_events_spooled_until_they_are_fixed() {
    let Some(ch) = ClickHouse::start("auth") else {
        return;
    };
    let spool = temp_dir("store-auth");
    let mut c = config(&ch, &spool);
    c.user = Some(nhiscope_tests::clickhouse::WRITER_USER.into());
    c.password = Some(nhiscope::publish::store::config::Secret::new("wrong"));
    let report = runtime().block_on(async {
        let store = Store::start(c.clone(), "host-w").unwrap_or_else(|e| panic!("{e}"));
        store.send(&events("host-w", 0..300));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let s = store.stats();
        assert!(!s.healthy && s.errors > 0 && s.spool_rows == 300, "{s:?}");
        // The health the dashboard shows: the spooled events are late, and why.
        assert!(s.lag > Duration::ZERO, "spooled events but no lag: {s:?}");
        let why = store.last_error().expect("the failure is kept");
        assert!(
            why.to_lowercase().contains("password") || why.contains("auth"),
            "{why}"
        );
        store.shutdown().await.unwrap_or_else(|e| panic!("{e}"))
    });
    assert!(report.spooled_batches > 0, "{report:?}");
    c.password = Some(nhiscope::publish::store::config::Secret::new(
        nhiscope_tests::clickhouse::WRITER_PASSWORD,
    ));
    runtime().block_on(async {
        let store = Store::start(c.clone(), "host-w").unwrap_or_else(|e| panic!("{e}"));
        wait_drained(&store, &ch, Duration::from_secs(10)).await;
        let s = store.stats();
        assert_eq!(s.lag, Duration::ZERO, "everything is stored: {s:?}");
        assert_eq!(store.last_error(), None);
        store.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    });
    let pids: Vec<u64> = (0..300).collect();
    assert_stored_once(&ch, "host-w", &pids);
}

/// The child of [`a_killed_store_replays_its_spool_on_restart`]: a store process to SIGKILL.
/// Does nothing unless `NHISCOPE_STORE_CHILD` names the ClickHouse URL.
#[test]
fn store_child_process() {
    let Ok(url) = std::env::var("NHISCOPE_STORE_CHILD") else {
        return;
    };
    let spool = std::env::var("NHISCOPE_STORE_CHILD_SPOOL").unwrap_or_default();
    let mut c = StoreConfig::new(&url).unwrap_or_else(|e| panic!("{e}"));
    c.spool_dir = spool.into();
    c.batch_rows = 1000;
    c.batch_interval = Duration::from_secs(3600);
    c.retry_max = Duration::from_millis(300);
    runtime().block_on(async {
        let store = Store::start(c, "host-k").unwrap_or_else(|e| panic!("{e}"));
        store.send(&events("host-k", 0..1000));
        while store.stats().inserted_rows < 1000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("INSERTED");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        // ClickHouse is down now: the next full batch goes to the spool, 500 stay in memory.
        store.send(&events("host-k", 1000..2500));
        while store.stats().spool_rows < 1000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        println!("READY");
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

#[test]
fn a_killed_store_replays_its_spool_on_restart() {
    let Some(mut ch) = ClickHouse::start("sigkill") else {
        return;
    };
    let spool = temp_dir("store-sigkill");
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "store_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NHISCOPE_STORE_CHILD", ch.url())
        .env("NHISCOPE_STORE_CHILD_SPOOL", &spool)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the child: {e}"));
    // Whatever happens, the child is gone within 30 s, and the reads below see the end.
    let pid = child.id() as libc::pid_t;
    let reaped = std::sync::Arc::new(std::sync::Mutex::new(false));
    let watchdog = std::sync::Arc::clone(&reaped);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        let reaped = watchdog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*reaped {
            // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet
            // (the flag is set under this lock right after `wait`), so the pid is still its.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("no stdout")));
    let mut wait_for = |word: &str| {
        let mut line = String::new();
        loop {
            line.clear();
            let n = out.read_line(&mut line).unwrap_or(0);
            assert!(n > 0, "the child ended before printing {word}");
            if line.trim().ends_with(word) {
                return;
            }
        }
    };
    wait_for("INSERTED");
    ch.stop();
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
    let _ = stdin.write_all(b"go\n");
    drop(stdin);
    wait_for("READY");
    {
        let mut reaped = reaped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        *reaped = true;
    }

    ch.restart();
    let mut c = config(&ch, &spool);
    c.batch_rows = 1000;
    runtime().block_on(async {
        let store = Store::start(c, "host-k").unwrap_or_else(|e| panic!("{e}"));
        wait_drained(&store, &ch, Duration::from_secs(15)).await;
        store.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    });
    let pids: Vec<u64> = (0..2000).collect();
    assert_stored_once(&ch, "host-k", &pids);
    let losses = ch.query_json("SELECT cause, count FROM nhiscope.losses WHERE host = 'host-k'");
    assert_eq!(losses.len(), 1, "{losses:?}");
    assert_eq!(losses[0]["cause"], "unclean_stop");
    assert_eq!(
        losses[0]["count"], 500,
        "the 500 events in memory at the kill"
    );
}

#[test]
fn every_shipped_query_runs_on_18_16() {
    let Some(ch) = ClickHouse::start("queries") else {
        return;
    };
    let spool = temp_dir("store-queries");
    let config = config(&ch, &spool);
    let sent = events("host-q", 0..200);
    let requests = nhiscope_tests::fixtures::request_events("host-q", 200..230);
    runtime().block_on(async {
        let store = Store::start(config.clone(), "host-q").unwrap_or_else(|e| panic!("{e}"));
        store.send(&sent);
        let mut loss = Event::new(Kind::Loss, sent[0].ts, "host-q".into());
        loss.count = Some(17);
        loss.cause = Some("ringbuf_full_open".into());
        loss.reason = "17 open record(s) were lost in the kernel.".into();
        store.send(&[loss]);
        store.send(&requests);
        store.heartbeat(&[("records", 201)]);
        store.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    });
    let client = admin_client(&config).with_database(&config.database);
    let schema = legacy_schema(&config.database);
    let (from, to) = (Param::U64(1_700_000_000), Param::U64(1_900_000_000));
    let params = |q: &queries::Query| -> Vec<Param> {
        q.params
            .iter()
            .map(|p| match *p {
                "nhi" => Param::from("billing-s3-writer"),
                "host" => Param::from("host-q"),
                "hosts" => Param::Strs(vec![]),
                "from" => from.clone(),
                "to" => to.clone(),
                "limit" => Param::U64(1000),
                other => panic!("no test value for parameter {other}"),
            })
            .collect()
    };
    let rt = runtime();
    let mut results = HashMap::new();
    for q in queries::ALL {
        let rows = if q.returns_events {
            let rows = rt
                .block_on(queries::fetch_events(&client, &schema, q, &params(q)))
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", q.name, ch.logs()));
            rows.iter()
                .map(|r| serde_json::json!({"seq": r.seq, "pid": r.event.pid}))
                .collect()
        } else {
            rt.block_on(queries::fetch_json(&client, &schema, q, &params(q)))
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", q.name, ch.logs()))
        };
        results.insert(q.name, rows);
    }
    let opens = sent
        .iter()
        .filter(|e| e.kind == Kind::Open || e.kind == Kind::Connect)
        .count();
    let n_requests = requests.len();
    let request_drifts = requests
        .iter()
        .filter(|e| e.verdict == Verdict::Drift)
        .count();
    let total = 201 + n_requests;
    assert_eq!(results["events_by_nhi"].len(), opens + n_requests);
    assert_eq!(
        results["events_by_host"].len(),
        total,
        "200 events, the loss event and the requests"
    );
    let drifts = sent.iter().filter(|e| e.verdict == Verdict::Drift).count();
    assert_eq!(results["drift"].len(), drifts + request_drifts);
    assert_eq!(
        results["nhi_summary"][0]["drifts"],
        (drifts + request_drifts) as u64
    );
    // reader_out_of_scope and interactive_use of the opens, api_out_of_scope and name_mismatch
    // of the requests.
    assert_eq!(results["drift_kinds"].len(), 4);
    assert_eq!(results["drift_kinds"][0]["n"], drifts as u64);
    let per_minute: u64 = results["verdicts_per_minute"]
        .iter()
        .map(|r| r["n"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(per_minute, total as u64);
    assert_eq!(results["losses_by_host"][0]["lost"], 17);
    assert_eq!(results["losses"][0]["cause"], "ringbuf_full_open");
    assert_eq!(results["agents"][0]["counter_names"][0], "records");
    let uses: u64 = results["dashboard_uses"]
        .iter()
        .map(|r| r["n"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        uses,
        (opens + n_requests) as u64,
        "the uses and the requests (their APIs), counted"
    );
    let active: u64 = results["dashboard_activity"]
        .iter()
        .map(|r| r["n"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(active, opens as u64);
    assert_eq!(results["dashboard_recent"].len(), total);
    assert_eq!(
        results["dashboard_recent"][0]["seq"],
        total as u64 - 1,
        "newest first"
    );
    assert_eq!(results["dashboard_drift"].len(), drifts + request_drifts);
    let scope: u64 = results["scope_uses"]
        .iter()
        .map(|r| r["n"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        scope,
        (opens + n_requests) as u64,
        "every use of the NHI, grouped"
    );
    // The APIs: every request counted once under its server name, method and path.
    let apis = &results["apis"];
    let counted: u64 = apis.iter().map(|r| r["n"].as_u64().unwrap_or(0)).sum();
    assert_eq!(counted, n_requests as u64, "{apis:?}");
    let fronted = apis
        .iter()
        .find(|r| r["server_name"] == "api.github.com")
        .unwrap_or_else(|| panic!("{apis:?}"));
    assert_eq!(fronted["n"], fronted["drifts"], "{fronted}");
    assert_eq!(
        fronted["drift"],
        serde_json::json!(["api_out_of_scope", "name_mismatch"])
    );
    let put = apis
        .iter()
        .find(|r| r["method"] == "PUT")
        .unwrap_or_else(|| panic!("{apis:?}"));
    assert_eq!(put["server_name"], "bucket.s3.eu-west-1.amazonaws.com");
    assert_eq!(
        (put["dport"].as_u64(), put["drifts"].as_u64()),
        (Some(80), Some(0))
    );
}

fn nhiscope_cli(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(nhiscope_tests::nhiscope_bin())
        .args(args)
        .output()
        .expect("run nhiscope");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `nhiscope query` and `nhiscope scope suggest`, the real binary against a real server.
#[test]
fn responders_query_the_history_and_get_a_scope_suggested() {
    let Some(ch) = ClickHouse::start("responder") else {
        return;
    };
    let spool = temp_dir("store-responder");
    let config = config(&ch, &spool);
    let sent = events("host-r", 0..100);
    let requests = nhiscope_tests::fixtures::request_events("host-r", 100..130);
    runtime().block_on(async {
        let store = Store::start(config.clone(), "host-r").unwrap_or_else(|e| panic!("{e}"));
        store.send(&sent);
        store.send(&requests);
        store.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    });
    let url = ch.url();
    // Back to the fixtures' days, whenever this runs.
    let since = format!("{}d", days_back_to_fixtures());
    let q = |extra: &[&str]| {
        let mut args = vec!["query"];
        args.extend_from_slice(extra);
        args.extend(["--clickhouse", url.as_str(), "--since", since.as_str()]);
        nhiscope_cli(&args)
    };
    let drifts = sent
        .iter()
        .chain(&requests)
        .filter(|e| e.verdict == Verdict::Drift)
        .count();
    let (code, out, err) = q(&["drift", "--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert_eq!(lines.len(), drifts);
    assert!(lines
        .iter()
        .all(|e| e["verdict"] == "drift" && e["host"] == "host-r"));

    let (code, out, err) = q(&["nhi_summary", "--format", "csv"]);
    assert_eq!(code, Some(0), "{err}");
    let mut rows = out.lines();
    assert_eq!(
        rows.next(),
        Some("nhi,events,drifts,hosts,exes,first_secs,last_secs"),
        "columns in the query's order:\n{out}"
    );
    let opens = sent
        .iter()
        .filter(|e| matches!(e.kind, Kind::Open | Kind::Connect))
        .count()
        + requests.len();
    assert!(
        rows.next()
            .is_some_and(|r| r.starts_with(&format!("billing-s3-writer,{opens},{drifts},1,"))),
        "{out}"
    );

    let (code, out, err) = q(&["events_by_nhi", "--nhi", "billing-s3-writer"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("TIME "), "{out}");
    assert_eq!(
        out.lines().count(),
        opens + 1,
        "a header and one line per use and request"
    );
    assert!(
        out.contains("DRIFT") && out.contains("/usr/bin/python3.11[0]"),
        "{out}"
    );

    // The APIs the NHI's holders used, per server name, port, method and path.
    let (code, out, err) = q(&["apis", "--format", "csv"]);
    assert_eq!(code, Some(0), "{err}");
    let mut rows = out.lines();
    assert_eq!(
        rows.next(),
        Some("nhi,server_name,dport,method,path,n,drifts,drift,first_secs,last_secs"),
        "{out}"
    );
    let rows: Vec<&str> = rows.collect();
    let tls_ok = requests
        .iter()
        .filter(|e| e.wire.sni.as_deref() == Some("bucket.s3.eu-west-1.amazonaws.com"))
        .count();
    assert!(
        rows.iter().any(|r| r.starts_with(&format!(
            "billing-s3-writer,bucket.s3.eu-west-1.amazonaws.com,443,,,{tls_ok},0,"
        ))),
        "{out}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with(
            "billing-s3-writer,bucket.s3.eu-west-1.amazonaws.com,80,DELETE,/uploads/report-105.csv,1,1,"
        ) && r.contains("api_out_of_scope")),
        "{out}"
    );
    let (code, _, err) = q(&["apis", "--nhi", "x"]);
    assert_eq!(code, Some(2), "{err}");

    // Flags a query does not take, a missing one, an unknown query: exit 2, and why.
    for (args, needle) in [
        (vec!["drift", "--nhi", "x"], "does not take --nhi"),
        (vec!["events_by_nhi"], "needs --nhi"),
        (vec!["no_such_query"], "nhiscope query list"),
        (vec!["drift", "--from", "yesterday"], "--from yesterday"),
    ] {
        let (code, _, err) = q(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let (code, out, _) = nhiscope_cli(&["query", "list"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("scope_uses") && out.contains("--nhi ID"),
        "{out}"
    );
    // ClickHouse unreachable: exit 1 and what failed.
    let closed = nhiscope_tests::clickhouse::free_port();
    let (code, _, err) = nhiscope_cli(&[
        "query",
        "agents",
        "--clickhouse",
        &format!("http://127.0.0.1:{closed}"),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{closed}")), "{err}");

    // The scope learned from those events is a registry that allows them and nothing else.
    let (code, out, err) = nhiscope_cli(&[
        "scope",
        "suggest",
        "--nhi",
        "billing-s3-writer",
        "--since",
        &since,
        "--clickhouse",
        &url,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let r = nhiscope::domain::registry::parse(&out, "suggestion")
        .unwrap_or_else(|e| panic!("{e}\n{out}"));
    let n = r.nhi("billing-s3-writer").expect("the NHI");
    let readers = n.readers.as_ref().expect("readers");
    for e in sent
        .iter()
        .filter(|e| e.kind == Kind::Open && e.result.unwrap_or(0) >= 0)
    {
        assert!(
            readers.allows(&e.exe, e.uid),
            "{} uid {} not allowed:\n{out}",
            e.exe,
            e.uid
        );
    }
    assert!(
        out.contains("refused by the kernel"),
        "EACCES opens are noted:\n{out}"
    );
    let eps = n.endpoints.as_ref().expect("endpoints");
    for e in sent.iter().filter(|e| e.kind == Kind::Connect) {
        let addr: std::net::IpAddr = e.daddr.expect("addr");
        let names = e.dns_names.clone().unwrap_or_default();
        assert!(
            eps.iter().any(|ep| ep.allows(addr, 443, &names)),
            "{addr} {names:?} not allowed:\n{out}"
        );
        assert!(
            !eps.iter().any(|ep| ep.allows(addr, 22, &names)),
            "port 22 allowed"
        );
    }
    // Every request seen is allowed, its server name, method and path included; others not.
    for e in &requests {
        let addr: std::net::IpAddr = e.daddr.expect("addr");
        let names = e.dns_names.clone().unwrap_or_default();
        let port = e.dport.expect("port");
        let (name, method, path) = (
            e.wire.server_name(),
            e.wire.http_method.as_deref(),
            e.wire.http_path.as_deref(),
        );
        // Rows keep the fields, not how they were read: HTTP when a method was read.
        let readout = if method.is_some() {
            Readout::Http
        } else {
            Readout::Tls
        };
        let ep = eps
            .iter()
            .find(|ep| ep.allows(addr, port, &names))
            .unwrap_or_else(|| panic!("{addr}:{port} not allowed:\n{out}"));
        assert!(
            ep.allows_api(name, method, path, readout),
            "{e:?} not allowed:\n{out}"
        );
        assert!(
            !ep.allows_api(Some("other.example.com"), None, None, readout),
            "{out}"
        );
        if method.is_some() {
            assert!(!ep.allows_api(name, Some("PATCH"), path, readout), "{out}");
            assert!(
                !ep.allows_api(name, method, Some("/admin/users"), readout),
                "{out}"
            );
        }
    }
    assert!(
        out.contains("sni: [\"api.github.com\", \"bucket.s3.eu-west-1.amazonaws.com\"]"),
        "{out}"
    );
    assert!(out.contains("methods: [\"DELETE\", \"PUT\"]"), "{out}");
    assert!(out.contains("- \"/uploads/*\"  # 15 paths"), "{out}");
    // And `nhiscope registry check` accepts it.
    let file = temp_dir("responder-suggestion").join("suggested.yaml");
    std::fs::write(&file, &out).unwrap_or_else(|e| panic!("{e}"));
    let (code, stdout, err) = nhiscope_cli(&["registry", "check", file.to_str().expect("utf8")]);
    assert_eq!(code, Some(0), "{stdout}{err}\n{out}");
}

/// The dashboard's history of a fleet, read from a real server: counts per NHI, the newest
/// use per host, a host filter, and (fed to the dashboard's state with the same events arriving
/// live) every use counted once.
#[test]
fn the_dashboard_reads_a_fleet_history() {
    use nhiscope::{
        publish::store::read::Reader,
        view::tui::{
            app::{App, History},
            history,
            model::{Subject, Update},
        },
    };
    let Some(ch) = ClickHouse::start("history") else {
        return;
    };
    let spool = temp_dir("store-history");
    let config = config(&ch, &spool);
    let a = events("host-a", 0..200);
    let b = events("host-b", 200..260);
    runtime().block_on(async {
        for (host, sent) in [("host-a", &a), ("host-b", &b)] {
            let store = Store::start(config.clone(), host).unwrap_or_else(|e| panic!("{e}"));
            store.send(sent);
            store.heartbeat(&[("records", sent.len() as u64)]);
            store.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
        }
    });
    let client = admin_client(&config);
    let now = std::time::SystemTime::now();
    let opts = |hosts: &[&str]| history::Options {
        config: config.clone(),
        since: Duration::from_secs(days_back_to_fixtures() * 86_400),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        refresh: Duration::from_secs(5),
        drift_limit: 1000,
        stream_limit: 5000,
    };
    let rt = runtime();
    let schema = rt
        .block_on(nhiscope::publish::store::migrate::read_schema(
            &client, &config,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(schema.dialect, Dialect::Legacy);
    let mut reader = Reader::new(config.clone());
    let snap = rt
        .block_on(history::fetch(&mut reader, &opts(&[]), now))
        .unwrap_or_else(|e| panic!("{e}\n{}", ch.logs()));

    let count = |evs: &[&Event], k: Kind| evs.iter().filter(|e| e.kind == k).count() as u64;
    let all: Vec<&Event> = a.iter().chain(&b).collect();
    let nhi = Subject::Nhi("billing-s3-writer".into());
    let st = &snap.stats[&nhi];
    assert_eq!(st.reads, count(&all, Kind::Open));
    assert_eq!(st.connections, count(&all, Kind::Connect));
    let drifts = all.iter().filter(|e| e.verdict == Verdict::Drift).count();
    assert_eq!(st.drifts, drifts as u64);
    assert_eq!(st.hosts.len(), 2);
    for (host, sent) in [("host-a", &a), ("host-b", &b)] {
        let newest_use = sent
            .iter()
            .filter(|e| matches!(e.kind, Kind::Open | Kind::Connect))
            .map(|e| e.ts.as_nanos())
            .max();
        assert_eq!(snap.watermarks.get(host).copied(), newest_use, "{host}");
    }
    assert_eq!(snap.drifts.len(), drifts);
    assert_eq!(snap.stream.len(), 260);
    assert_eq!(&*snap.stream[0].host, "host-b", "newest first");
    let fleet: Vec<&str> = snap.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(fleet, ["host-a", "host-b"]);
    assert!(snap.hosts.iter().all(|h| h.last_heartbeat.is_some()));

    // One host only.
    let only_b = rt
        .block_on(history::fetch(&mut reader, &opts(&["host-b"]), now))
        .unwrap_or_else(|e| panic!("{e}"));
    let b_refs: Vec<&Event> = b.iter().collect();
    assert_eq!(only_b.stats[&nhi].reads, count(&b_refs, Kind::Open));
    assert_eq!(only_b.stream.len(), 60);
    assert!(only_b.stream.iter().all(|e| &*e.host == "host-b"));
    let fleet: Vec<&str> = only_b.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(fleet, ["host-b"]);

    // The dashboard saw host-a's events live before the snapshot came: each use counts once.
    let mut app =
        App::new("-", now).with_history(History::new(Duration::from_secs(86_400), vec![]));
    for e in &a {
        app.on_event(e.clone());
    }
    assert_eq!(
        app.stats[&nhi].reads,
        count(&a.iter().collect::<Vec<_>>(), Kind::Open)
    );
    app.on_update(Update::History(Box::new(snap)));
    assert_eq!(app.stats[&nhi].reads, count(&all, Kind::Open));
    assert_eq!(app.history.as_ref().map(History::pending), Some(0));
}

#[test]
fn db_migrate_applies_the_schema_once_and_rejects_a_bad_url() {
    let Some(ch) = ClickHouse::start("migrate") else {
        return;
    };
    let bin = nhiscope_tests::nhiscope_bin();
    let run = |args: &[&str]| {
        let out = Command::new(&bin)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let url = ch.url();
    let (code, stdout, stderr) = run(&["db", "migrate", "--clickhouse", &url]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("applied 1") && stdout.contains("legacy"),
        "{stdout}"
    );
    let (code, stdout, stderr) = run(&["db", "migrate", "--clickhouse", &url]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("nothing to apply"), "{stdout}");
    let tables =
        ch.query("SELECT name FROM system.tables WHERE database = 'nhiscope' ORDER BY name");
    assert_eq!(tables, "agents\nevents\nlosses\nschema_migrations\n");

    for (bad, why) in [
        ("ftp://127.0.0.1:8123", "not http"),
        (
            "http://user:pw@127.0.0.1:8123",
            "credentials do not belong in the URL",
        ),
        ("not a url", "not a URL"),
    ] {
        let (code, _, stderr) = run(&["db", "migrate", "--clickhouse", bad]);
        assert_eq!(code, Some(2), "{bad}: {stderr}");
        assert!(stderr.contains(why), "{bad}: {stderr}");
        assert!(!stderr.contains("pw@"), "the password is echoed: {stderr}");
    }
    // An unreachable server is a runtime failure (1), with a clear message.
    let closed = format!(
        "http://127.0.0.1:{}",
        nhiscope_tests::clickhouse::free_port()
    );
    let (code, _, stderr) = run(&["db", "migrate", "--clickhouse", &closed]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

/// A database an older nhiscope made (schema version 2, rows in it) gains the Kubernetes
/// columns of version 3 and `established_before_use` of version 4 from `db migrate`, its rows
/// kept with the new columns empty; rows with pods and connections open before a read then go
/// in and come back.
#[test]
fn db_migrate_brings_a_version_2_database_to_the_pod_columns() {
    let Some(ch) = ClickHouse::start("migrate-v3") else {
        return;
    };
    let s = legacy_schema("nhiscope");
    ch.query(&s.create_database());
    ch.query(&s.create_migrations_table());
    for m in &nhiscope::publish::store::schema::MIGRATIONS[..2] {
        for stmt in (m.statements)(&s) {
            ch.query(&stmt);
        }
        ch.query(&format!(
            "INSERT INTO nhiscope.schema_migrations (version, name, dialect, applied_at) \
             VALUES ({}, '{}', 'legacy', now())",
            m.version, m.name
        ));
    }
    let columns = || {
        ch.query(
            "SELECT name, type FROM system.columns WHERE database = 'nhiscope' AND \
             table = 'events' AND name IN ('pod_uid', 'pod', 'pod_namespace', \
             'container_name', 'established_before_use') ORDER BY name",
        )
    };
    assert_eq!(columns(), "");
    ch.query(
        "INSERT INTO nhiscope.events (ts, host, run_id, seq, kind, verdict, path, script) \
         VALUES (now(), 'old-host', 1, 1, 'open', 'ok', '/etc/old', '/opt/old.py')",
    );

    let bin = nhiscope_tests::nhiscope_bin();
    let migrate = || {
        let out = Command::new(&bin)
            .args(["db", "migrate", "--clickhouse", &ch.url()])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        text
    };
    let out = migrate();
    assert!(out.contains("applied 3, 4, 5"), "{out}");
    assert_eq!(
        columns(),
        "container_name\tString\nestablished_before_use\tUInt8\npod\tString\n\
         pod_namespace\tString\npod_uid\tString\n"
    );
    assert_eq!(
        ch.query("SELECT max(version) FROM nhiscope.schema_migrations"),
        "5\n"
    );
    // The old row, whole, with the new columns empty.
    assert_eq!(
        ch.query(
            "SELECT host, path, script, pod_uid, pod, pod_namespace, container_name, \
             established_before_use FROM nhiscope.events"
        ),
        "old-host\t/etc/old\t/opt/old.py\t\t\t\t\t0\n"
    );
    assert!(migrate().contains("nothing to apply"));

    // The store writes rows with pods into the migrated table, and they read back whole.
    let dir = temp_dir("migrate-v3");
    let config = config(&ch, &dir.join("spool"));
    let mut sent = events("new-host", 0..8);
    assert!(sent.iter().any(|e| e.pod.is_some()));
    let conn = sent
        .iter_mut()
        .find(|e| e.kind == nhiscope::domain::event::Kind::Connect)
        .expect("the fixtures have a connect");
    conn.established_before_use = true;
    let report = runtime().block_on(async {
        let store = Store::start(config.clone(), "new-host").unwrap_or_else(|e| panic!("{e}"));
        store.send(&sent);
        store.shutdown().await.unwrap_or_else(|e| panic!("{e}"))
    });
    assert_eq!(report.stats.accepted, 8, "{report:?}");
    let back: Vec<Event> = read_back(&ch, &config, "new-host")
        .iter()
        .map(|r| r.event.clone())
        .collect();
    assert_eq!(back, sent);
}

/// A database at schema version 4 (rows in it) gains the `request` kind and the columns of what
/// a connection's first bytes said from `db migrate` (version 5), its rows kept with the new
/// columns empty; request events (TLS and HTTP, drifting or not) then go in through the store
/// and come back equal, beside the other kinds.
#[test]
fn db_migrate_brings_a_version_4_database_to_request_events() {
    let Some(ch) = ClickHouse::start("migrate-v5") else {
        return;
    };
    let s = legacy_schema("nhiscope");
    ch.query(&s.create_database());
    ch.query(&s.create_migrations_table());
    for m in &nhiscope::publish::store::schema::MIGRATIONS[..4] {
        for stmt in (m.statements)(&s) {
            ch.query(&stmt);
        }
        ch.query(&format!(
            "INSERT INTO nhiscope.schema_migrations (version, name, dialect, applied_at) \
             VALUES ({}, '{}', 'legacy', now())",
            m.version, m.name
        ));
    }
    let kind_type = || {
        ch.query(
            "SELECT type FROM system.columns WHERE database = 'nhiscope' AND table = 'events' \
             AND name = 'kind'",
        )
    };
    assert!(!kind_type().contains("request"), "{}", kind_type());
    let wire_columns = || {
        ch.query(
            "SELECT name, type FROM system.columns WHERE database = 'nhiscope' AND \
             table = 'events' AND name IN ('sni', 'alpn', 'tls_version', 'http_method', \
             'http_host', 'http_path') ORDER BY name",
        )
    };
    assert_eq!(wire_columns(), "");
    ch.query(
        "INSERT INTO nhiscope.events (ts, host, run_id, seq, kind, verdict, daddr, dport, \
         nhi, established_before_use) VALUES (now(), 'old-host', 1, 1, 'connect', 'ok', \
         '10.1.2.3', 443, 'billing', 1)",
    );

    let bin = nhiscope_tests::nhiscope_bin();
    let migrate = || {
        let out = Command::new(&bin)
            .args(["db", "migrate", "--clickhouse", &ch.url()])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        text
    };
    let out = migrate();
    assert!(out.contains("applied 5"), "{out}");
    // (Quotes come back escaped in TabSeparated.)
    assert!(kind_type().contains(r"\'request\' = 7"), "{}", kind_type());
    assert_eq!(
        wire_columns(),
        "alpn\tArray(String)\nhttp_host\tString\nhttp_method\tString\nhttp_path\tString\n\
         sni\tString\ntls_version\tString\n"
    );
    assert_eq!(
        ch.query("SELECT max(version) FROM nhiscope.schema_migrations"),
        "5\n"
    );
    // The old row, whole, with the new columns empty.
    assert_eq!(
        ch.query(
            "SELECT host, kind, daddr, dport, nhi, established_before_use, sni, alpn, \
             tls_version, http_method, http_host, http_path FROM nhiscope.events"
        ),
        "old-host\tconnect\t10.1.2.3\t443\tbilling\t1\t\t[]\t\t\t\t\n"
    );
    assert!(migrate().contains("nothing to apply"));

    // Request events and the other kinds go in through the store and come back equal.
    let dir = temp_dir("migrate-v5");
    let config = config(&ch, &dir.join("spool"));
    let mut sent = nhiscope_tests::fixtures::request_events("new-host", 0..12);
    sent.extend(events("new-host", 12..20));
    sent.sort_by_key(|e| e.ts);
    let report = runtime().block_on(async {
        let store = Store::start(config.clone(), "new-host").unwrap_or_else(|e| panic!("{e}"));
        store.send(&sent);
        store.shutdown().await.unwrap_or_else(|e| panic!("{e}"))
    });
    assert_eq!(report.stats.accepted, 20, "{report:?}");
    let back: Vec<Event> = read_back(&ch, &config, "new-host")
        .iter()
        .map(|r| r.event.clone())
        .collect();
    assert_eq!(back, sent);
    assert_eq!(
        ch.query(
            "SELECT sni, http_method, http_path FROM nhiscope.events \
             WHERE kind = 'request' AND pid IN (2, 3) ORDER BY pid"
        ),
        "bucket.s3.eu-west-1.amazonaws.com\t\t\n\tDELETE\t/uploads/report-3.csv\n"
    );
}

/// The whole chain, as root: the daemon with its probes writes numbered canary opens to
/// ClickHouse, which is killed in the middle and restarted; after SIGTERM every canary is
/// stored exactly once and no loss is recorded.
#[test]
fn daemon_canaries_survive_a_clickhouse_outage() {
    if !require_root_bpf() {
        return;
    }
    let Some(mut ch) = ClickHouse::start("daemon") else {
        return;
    };
    let dir = std::fs::canonicalize(temp_dir("store-daemon")).unwrap_or_else(|e| panic!("{e}"));
    let canaries = dir.join("canaries");
    std::fs::create_dir_all(&canaries).unwrap_or_else(|e| panic!("{e}"));
    let n = 300u64;
    for i in 0..n {
        std::fs::write(canaries.join(format!("canary-{i}")), "x").unwrap_or_else(|e| panic!("{e}"));
    }
    let registry = format!(
        "nhis:\n  - id: canary\n    credentials:\n      - {}/canary-*\n",
        canaries.display()
    );
    let config = dir.join("clickhouse.yaml");
    std::fs::write(
        &config,
        format!(
            "url: {}\nspool_dir: {}\nbatch_interval: 100ms\nretry_max: 500ms\n",
            ch.url(),
            dir.join("spool").display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let d = Daemon::start_with(
        &registry,
        &["--clickhouse-config".as_ref(), config.as_os_str()],
    );
    let open = |range: std::ops::Range<u64>| {
        let script = format!(
            "import time\nfor i in range({}, {}):\n    open('{}/canary-%d' % i).close()\n    time.sleep(0.003)\n",
            range.start,
            range.end,
            canaries.display()
        );
        let status = Command::new("python3")
            .args(["-c", &script])
            .status()
            .unwrap_or_else(|e| panic!("python3: {e}"));
        assert!(status.success());
    };
    open(0..100);
    std::thread::sleep(Duration::from_millis(300));
    ch.stop();
    open(100..200);
    std::thread::sleep(Duration::from_millis(800));
    ch.restart();
    open(200..n);
    let last = canaries.join(format!("canary-{}", n - 1));
    d.wait_for(Duration::from_secs(10), |e| {
        e["kind"] == "open" && e["path"] == last.to_string_lossy().as_ref()
    });
    // The spool drains once the store sees ClickHouse back (after its retry backoff); a daemon
    // stopped before that keeps the rest spooled for its next start, which another test covers.
    let stored = || {
        ch.query_u64(&format!(
            "SELECT uniqExact(path) FROM nhiscope.events WHERE kind = 'open' \
             AND path LIKE '{}/canary-%'",
            canaries.display()
        ))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stored() < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = d.stop();
    assert!(status.success(), "{status}");
    let rows = ch.query_json(&format!(
        "SELECT path, count() AS n FROM nhiscope.events WHERE kind = 'open' \
         AND path LIKE '{}/canary-%' GROUP BY path",
        canaries.display()
    ));
    let doubled: Vec<_> = rows.iter().filter(|r| r["n"] != 1).collect();
    assert!(doubled.is_empty(), "stored twice: {doubled:?}");
    assert_eq!(
        rows.len() as u64,
        n,
        "canaries stored: {} of {n}",
        rows.len()
    );
    assert_eq!(ch.query_u64("SELECT count() FROM nhiscope.losses"), 0);
    assert!(ch.query_u64("SELECT count() FROM nhiscope.agents") <= 2);
}

/// A server that accepts connections and never answers: `shutdown` must not wait for it.
#[test]
fn shutdown_is_prompt_when_clickhouse_hangs() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "http://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let spool = temp_dir("store-hang");
    let mut c = StoreConfig::new(&url).unwrap_or_else(|e| panic!("{e}"));
    c.spool_dir = spool;
    c.request_timeout = Duration::from_secs(60);
    c.shutdown_timeout = Duration::from_millis(500);
    let (report, took) = runtime().block_on(async {
        let store = Store::start(c, "host-h").unwrap_or_else(|e| panic!("{e}"));
        store.send(&events("host-h", 0..100));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let report = store.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
        (report, started.elapsed())
    });
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert_eq!(report.stats.spool_rows, 100, "{report:?}");
}

#[test]
fn a_batch_the_server_keeps_rejecting_is_set_aside_and_the_rows_behind_it_are_stored() {
    let Some(ch) = ClickHouse::start("poison") else {
        return;
    };
    let proxy = RejectingProxy::start(ch.http_port(), b"/poison/marker");
    let spool = temp_dir("store-poison");
    let mut c = config(&ch, &spool);
    c.url = proxy.url();
    // The proxy looks for the marker in the body.
    c.compression = nhiscope::publish::store::config::Compression::None;
    c.batch_rows = 100;
    let report = runtime().block_on(async {
        let store = Store::start(c.clone(), "host-p").unwrap_or_else(|e| panic!("{e}"));
        store.send(&events("host-p", 0..100));
        let mut poison = events("host-p", 100..200);
        poison[50].exe = "/poison/marker".into();
        store.send(&poison);
        store.send(&events("host-p", 200..300));
        let started = Instant::now();
        while store.stats().inserted_rows < 200 || store.stats().spool_rows > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the rows behind the poison batch were not stored: {:?} ({} rejections)\n{}",
                store.stats(),
                proxy.rejected(),
                ch.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store.shutdown().await.unwrap_or_else(|e| panic!("{e}"))
    });
    assert_eq!(report.spooled_batches, 0, "{report:?}");
    assert!(proxy.rejected() >= 3, "{} rejections", proxy.rejected());
    let stored: Vec<u64> = (0..100).chain(200..300).collect();
    assert_stored_once(&ch, "host-p", &stored);
    let losses =
        ch.query_json("SELECT cause, count, reason FROM nhiscope.losses WHERE host = 'host-p'");
    assert_eq!(losses.len(), 1, "{losses:?}");
    assert_eq!(losses[0]["cause"], "rejected_by_server");
    assert_eq!(losses[0]["count"], 100, "{losses:?}");
    let dead: Vec<_> = std::fs::read_dir(spool.join("deadletter"))
        .unwrap_or_else(|e| panic!("no deadletter/: {e}"))
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
}

#[test]
fn a_corrupt_spool_file_at_start_is_a_loss_row() {
    let Some(ch) = ClickHouse::start("corruptspool") else {
        return;
    };
    let spool = temp_dir("store-corruptspool");
    std::fs::create_dir_all(spool.join("batches")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        spool.join("batches").join("0000000000000003.events.batch"),
        b"{\"v\":1,\"table\":\"ev",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let c = config(&ch, &spool);
    runtime().block_on(async {
        let store = Store::start(c.clone(), "host-s").unwrap_or_else(|e| panic!("{e}"));
        store.send(&events("host-s", 0..10));
        wait_drained(&store, &ch, Duration::from_secs(15)).await;
        store.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    });
    assert_stored_once(&ch, "host-s", &(0..10).collect::<Vec<_>>());
    let losses = ch.query_json("SELECT cause, reason FROM nhiscope.losses");
    assert_eq!(losses.len(), 1, "{losses:?}");
    assert_eq!(losses[0]["cause"], "spool_corrupt");
    assert!(
        losses[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("0000000000000003.events.batch")),
        "{losses:?}"
    );
}
