//! The ClickHouse store's throughput against a real local server (Debian's 18.16, started here
//! like the tests start it), run by `cargo xtask bench`, or alone:
//!
//! ```sh
//! cargo run --release -p nhiscope-tests --example store_bench -- [--rows N] [--outage N]
//! ```
//!
//! 1. The sink alone: rows built beforehand, 100k-row RowBinary batches over HTTP, with lz4 and
//!    without (docs/ARCHITECTURE.md, "Targets": at least 500k rows/s).
//! 2. The store under a flood: events sent as fast as the store takes them, through batching
//!    (it spills to the spool, and drops and counts what it cannot queue, rather than make its
//!    caller wait: the producer here paces itself, see [`pace`]).
//! 3. Recovery from a 10-minute outage at 1k events/s: that many events spooled while the
//!    server is down, then replayed when it is back.
//!
//! Human-readable lines go to stderr, one JSON object with the results to stdout.
#![expect(
    clippy::expect_used,
    reason = "a benchmark stops at the step that failed, naming it"
)]

use std::time::{Duration, Instant};

use nhiscope::publish::store::{
    config::Compression, row::EventRow, sink, Store, StoreConfig, StoreHandle,
};
use nhiscope_tests::{
    clickhouse::ClickHouse,
    fixtures::{cpu_secs, events},
    temp_dir,
};
use serde_json::json;

fn flag(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("store_bench: {name} {v}: not a number");
                std::process::exit(2)
            })
        })
        .unwrap_or(default)
}

/// Waits while more than `most` of the `sent` events are not yet stored, spooled or counted as
/// dropped. The store never makes its caller wait (the daemon's loop must keep draining the
/// ring buffer), so a producer that outruns ClickHouse and the disk on purpose paces itself.
async fn pace(store: &StoreHandle, sent: u64, most: u64) {
    loop {
        let s = store.stats();
        if sent.saturating_sub(s.inserted_rows + s.spooled_rows + s.dropped_events) <= most {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn main() {
    let n = flag("--rows", 1_000_000);
    let outage = flag("--outage", 600_000);
    let Some(mut ch) = ClickHouse::start("bench") else {
        eprintln!("store_bench: no clickhouse-server here (cargo xtask setup installs it)");
        std::process::exit(1);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut c = StoreConfig::new(&ch.url()).expect("config");
    c.spool_dir = temp_dir("bench-store");
    c.batch_rows = 100_000;
    c.batch_interval = Duration::from_millis(500);
    c.request_timeout = Duration::from_secs(60);
    let all = events("host-b", 0..n);
    let mut out = json!({ "rows": n, "outage_events": outage });

    for (compression, key) in [
        (Compression::Lz4, "sink_lz4"),
        (Compression::None, "sink_none"),
    ] {
        let mut c = c.clone();
        c.compression = compression;
        let host = format!("host-raw-{key}");
        let rows: Vec<EventRow> = all
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut r = EventRow::from_event(e, 1, i as u64);
                r.event.host = host.as_str().into();
                r
            })
            .collect();
        let batches: Vec<sink::Batch> = rows
            .chunks(100_000)
            .map(|r| sink::Batch::new(&host, 1, sink::Rows::Events(r.to_vec())))
            .collect();
        let (secs, ours, server) = rt.block_on(async {
            let (conn, _) = sink::Conn::open(&c).await.expect("connect");
            let pid = ch.pid().unwrap_or(0).to_string();
            let cpu0 = (cpu_secs("self"), cpu_secs(&pid));
            let started = Instant::now();
            for b in &batches {
                conn.insert(b).await.expect("insert");
            }
            let secs = started.elapsed().as_secs_f64();
            (secs, cpu_secs("self") - cpu0.0, cpu_secs(&pid) - cpu0.1)
        });
        eprintln!(
            "store_bench: sink alone ({compression:?}): {n} rows in {secs:.2} s = {:.0} rows/s; \
             CPU: nhiscope {ours:.2} s, clickhouse-server {server:.2} s",
            n as f64 / secs
        );
        out[key] = json!({
            "rows_per_s": n as f64 / secs,
            "cpu_s_nhiscope": ours,
            "cpu_s_server": server,
        });
    }

    let (secs, spooled, dropped) = rt.block_on(async {
        let store = Store::start(c.clone(), "host-b").expect("store");
        while !store.stats().healthy {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        let mut sent = 0;
        for chunk in all.chunks(1000) {
            store.send(chunk);
            sent += chunk.len() as u64;
            pace(&store, sent, 6 * c.batch_rows as u64).await;
        }
        while store.stats().inserted_rows + store.stats().dropped_events < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let s = store.stats();
        store.shutdown().await.expect("shutdown");
        (secs, s.spooled_rows, s.dropped_events)
    });
    eprintln!(
        "store_bench: through the store: {n} events in {secs:.2} s = {:.0} rows/s ({spooled} \
         spooled on the way, {dropped} dropped)",
        n as f64 / secs
    );
    out["store"] = json!({
        "rows_per_s": n as f64 / secs,
        "spooled": spooled,
        "dropped": dropped,
    });

    let mut c = c.clone();
    c.spool_dir = temp_dir("bench-store-outage");
    c.batch_rows = 500;
    c.retry_max = Duration::from_millis(200);
    ch.stop();
    let (secs, bytes) = rt.block_on(async {
        let store = Store::start(c.clone(), "host-o").expect("store");
        let mut sent = 0;
        for chunk in events("host-o", 0..outage).chunks(500) {
            store.send(chunk);
            sent += chunk.len() as u64;
            pace(&store, sent, 8 * c.batch_rows as u64).await;
        }
        while store.stats().spool_rows < outage {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let bytes = store.stats().spool_bytes;
        ch.restart();
        let started = Instant::now();
        loop {
            let s = store.stats();
            if s.spool_rows == 0 && s.healthy {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(900),
                "the spool did not drain: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        store.shutdown().await.expect("shutdown");
        (secs, bytes)
    });
    let stored = ch.query_u64("SELECT count() FROM nhiscope.events WHERE host = 'host-o'");
    eprintln!(
        "store_bench: outage replay: {outage} events ({} MB spooled) replayed in {secs:.1} s, \
         {stored} stored",
        bytes / 1_000_000
    );
    out["outage"] = json!({
        "replay_s": secs,
        "spool_bytes": bytes,
        "stored": stored,
    });
    println!("{out}");
}
