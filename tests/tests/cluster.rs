//! `--cluster NAME` on a real cluster: ZooKeeper and two ClickHouse 18.16 servers, one shard
//! each (the harness in `nhiscope_tests::cluster`). `nhiscope db migrate --cluster` creates the
//! replicated `*_local` tables and the `Distributed` tables over them on both servers; the store
//! writes through the `Distributed` table, each host's rows land on one shard, and a query on
//! either server sees every event exactly once.

use std::{
    collections::HashMap,
    process::Command,
    time::{Duration, Instant},
};

use nhiscope::{
    domain::event::{Event, Kind, OpenOp, Ts},
    publish::store::{Store, StoreConfig},
};
use nhiscope_tests::{
    clickhouse::ClickHouse,
    cluster::{Cluster, CLUSTER},
    temp_dir,
};

const TABLES: [&str; 3] = ["events", "losses", "agents"];
const PER_HOST: u64 = 300;

fn event(host: &str, i: u64) -> Event {
    let t = std::time::UNIX_EPOCH + Duration::new(1_795_000_000 + i, 7);
    let mut e = Event::new(Kind::Open, Ts::from_system(t), host.into());
    e.pid = i as u32;
    e.tid = i as u32;
    e.ppid = 1;
    e.exe = "/usr/bin/python3.11".into();
    e.comm = "python3".into();
    e.syscall = Some(OpenOp::Openat);
    e.path = Some(format!("/etc/billing/aws-credentials-{i}"));
    e.result = Some(3);
    e.flags = Some(0);
    e.nhi = Some("billing-s3-writer".into());
    e
}

/// Which shard (0 or 1) the `Distributed` tables send `host`'s rows to.
fn shard_of(ch: &ClickHouse, host: &str) -> u64 {
    ch.query_u64(&format!("SELECT cityHash64('{host}') % 2"))
}

/// `(host, pid) -> copies` of what a query through `db.events` on `ch` returns.
fn seen_through(ch: &ClickHouse) -> HashMap<(String, u64), u64> {
    ch.query_json("SELECT host, pid, count() AS n FROM nhiscope.events GROUP BY host, pid")
        .iter()
        .map(|r| {
            (
                (
                    r["host"].as_str().unwrap_or_default().to_owned(),
                    r["pid"].as_u64().unwrap_or(u64::MAX),
                ),
                r["n"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn cluster_mode_replicates_and_distributes_across_two_servers() {
    let Some(cluster) = Cluster::start("cluster") else {
        return;
    };
    let [a, b] = &cluster.servers[..] else {
        panic!("two servers expected");
    };

    // The schema, ON CLUSTER, through one server.
    let bin = nhiscope_tests::nhiscope_bin();
    let out = Command::new(&bin)
        .args([
            "db",
            "migrate",
            "--clickhouse",
            &a.url(),
            "--cluster",
            CLUSTER,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "db migrate --cluster failed ({}): {}{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    for (shard, ch) in cluster.servers.iter().enumerate() {
        for t in TABLES {
            let engine = ch.query(&format!(
                "SELECT engine FROM system.tables WHERE database = 'nhiscope' AND name = '{t}_local'"
            ));
            assert_eq!(engine.trim(), "ReplicatedReplacingMergeTree", "{t}_local");
            let engine = ch.query(&format!(
                "SELECT engine FROM system.tables WHERE database = 'nhiscope' AND name = '{t}'"
            ));
            assert_eq!(engine.trim(), "Distributed", "{t}");
        }
        // Schema version 5 on both: the `request` kind and its columns, on the local table and
        // the `Distributed` one made again over it.
        for t in ["events_local", "events"] {
            let cols = ch.query(&format!(
                "SELECT name, type FROM system.columns WHERE database = 'nhiscope' \
                 AND table = '{t}' AND name IN ('kind', 'sni', 'http_path') ORDER BY name"
            ));
            assert!(
                cols.contains(r"\'request\' = 7")
                    && cols.contains("sni\tString")
                    && cols.contains("http_path\tString"),
                "{t} on shard {shard}: {cols}"
            );
        }
        // Registered in ZooKeeper under this server's shard, writable.
        let replicas = ch.query_json(
            "SELECT table, zookeeper_path, replica_name, is_readonly FROM system.replicas \
             WHERE database = 'nhiscope' AND table = 'events_local'",
        );
        assert_eq!(replicas.len(), 1, "{replicas:?}");
        assert_eq!(
            replicas[0]["zookeeper_path"],
            format!("/clickhouse/tables/0{}/nhiscope/events_local", shard + 1)
        );
        assert_eq!(replicas[0]["replica_name"], format!("ch{}", shard + 1));
        assert_eq!(replicas[0]["is_readonly"], 0);
    }

    // Two hosts whose rows go to different shards, each writing through a different server.
    let host_a = "host-a";
    let host_b = (b'b'..=b'z')
        .map(|c| format!("host-{}", c as char))
        .find(|h| shard_of(a, h) != shard_of(a, host_a))
        .unwrap_or_else(|| panic!("no host name hashes to the other shard"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio: {e}"));
    for (ch, host) in [(a, host_a), (b, host_b.as_str())] {
        let mut config = StoreConfig::new(&ch.url()).unwrap_or_else(|e| panic!("{e}"));
        config.cluster = Some(CLUSTER.to_owned());
        config.spool_dir = temp_dir(&format!("cluster-spool-{host}"));
        config.batch_interval = Duration::from_millis(100);
        config.retry_max = Duration::from_millis(500);
        config.request_timeout = Duration::from_secs(10);
        let events: Vec<Event> = (0..PER_HOST).map(|i| event(host, i)).collect();
        let report = runtime.block_on(async {
            let store = Store::start(config, host).unwrap_or_else(|e| panic!("{e}"));
            store.send(&events[..PER_HOST as usize / 2]);
            store.send(&events[PER_HOST as usize / 2..]);
            store.shutdown().await.unwrap_or_else(|e| panic!("{e}"))
        });
        assert_eq!(report.spooled_batches, 0, "{report:?}\n{}", cluster.logs());
        assert_eq!(report.stats.accepted, PER_HOST, "{report:?}");
    }

    // Inserts into a Distributed table reach the shards in the background: wait for them, then
    // every event must be seen exactly once through either server.
    let expected: Vec<(String, u64)> = [host_a, host_b.as_str()]
        .iter()
        .flat_map(|h| (0..PER_HOST).map(move |i| (h.to_string(), i)))
        .collect();
    let started = Instant::now();
    for ch in [a, b] {
        loop {
            let seen = seen_through(ch);
            let complete = expected.iter().all(|k| seen.contains_key(k));
            if complete || started.elapsed() > Duration::from_secs(20) {
                let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
                assert!(doubled.is_empty(), "stored more than once: {doubled:?}");
                let missing: Vec<_> = expected.iter().filter(|k| !seen.contains_key(k)).collect();
                assert!(
                    missing.is_empty(),
                    "{} of {} events missing through {}, first: {:?}\n{}",
                    missing.len(),
                    expected.len(),
                    ch.url(),
                    &missing[..missing.len().min(5)],
                    cluster.logs()
                );
                assert_eq!(seen.len(), expected.len(), "unexpected extra events");
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Each host's rows are on its shard's local table only.
    for host in [host_a, host_b.as_str()] {
        let shard = shard_of(a, host) as usize;
        for (i, ch) in cluster.servers.iter().enumerate() {
            let n = ch.query_u64(&format!(
                "SELECT count() FROM nhiscope.events_local WHERE host = '{host}'"
            ));
            let want = if i == shard { PER_HOST } else { 0 };
            assert_eq!(n, want, "{host} rows on shard {}", i + 1);
        }
    }
}
