//! `nhiscope daemon --metrics`, as root: the real daemon watches a registered credential that
//! real processes read (one allowed, one not); its `/metrics` counts them, passes
//! `promtool check metrics`, and a real Prometheus server scrapes it and answers queries over
//! the series. Neither the credential's contents nor a secret on a command line ever shows in
//! the metrics. Bad `--metrics` input stops the daemon with exit code 2.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{
    ffi::OsStr,
    net::TcpListener,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use nhiscope_tests::{
    nhiscope_bin,
    procs::{canon, run, PYTHON},
    prometheus::{
        get, metrics_addr, promtool_check, sample, sample_names, scrape, single_value, wait_scrape,
        Prometheus,
    },
    require_root_bpf, temp_dir, Daemon,
};

const WAIT: Duration = Duration::from_secs(15);
/// Prometheus scrapes every second; a few scrapes and a query round trip fit in this.
const PROM_WAIT: Duration = Duration::from_secs(60);

fn registry(cred: &Path, readers: &str, extra_nhi: bool) -> String {
    let mut yaml = format!(
        "nhis:\n  - id: svc-metrics\n    credentials: [{}]\n    readers:\n      exe: [{readers}]\n",
        cred.display()
    );
    if extra_nhi {
        yaml.push_str("  - id: svc-added\n    credentials: [/etc/nhiscope-metrics-test/none]\n");
    }
    yaml
}

/// Replaces the daemon's registry in one step (a rename), as an editor or a deploy would: the
/// daemon notices the change and reloads it.
fn replace_registry(d: &Daemon, text: &str) {
    let tmp = d.dir().join("registry.yaml.new");
    std::fs::write(&tmp, text).expect("write registry");
    std::fs::rename(&tmp, d.dir().join("registry.yaml")).expect("rename registry");
}

#[test]
fn metrics_count_allowed_and_refused_reads_and_prometheus_scrapes_them() {
    if !require_root_bpf() {
        return;
    }
    let dir = std::fs::canonicalize(temp_dir("metrics")).expect("dir");
    let cred = dir.join("token");
    let content_canary = format!("CANARY-CREDENTIAL-CONTENT-{}", std::process::id());
    let cmdline_canary = format!("CANARY-CMDLINE-SECRET-{}", std::process::id());
    std::fs::write(&cred, format!("{content_canary}\n")).expect("credential");
    let cat = canon("cat");
    // `--cmdline full`: the daemon has the command line's secret in hand (it writes it to its
    // events), and still no metric carries it.
    let d = Daemon::start_with(
        &registry(&cred, &cat, false),
        &["--metrics", "127.0.0.1:0", "--cmdline", "full"].map(OsStr::new),
    );
    let addr = metrics_addr(&d);

    let (status, body) = get(addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("probes attached"), "{body}");

    let ok_series = "nhiscope_events_total{kind=\"open\",verdict=\"ok\"}";
    let drift_series = "nhiscope_events_total{kind=\"open\",verdict=\"drift\"}";
    let reader_drift = "nhiscope_drift_total{nhi=\"svc-metrics\",kind=\"reader_out_of_scope\"}";
    let before = scrape(addr);
    assert_eq!(sample(&before, ok_series), Some(0.0), "{before}");
    assert_eq!(sample(&before, drift_series), Some(0.0), "{before}");
    // The NHI's drift series exist before any drift, at zero.
    assert_eq!(sample(&before, reader_drift), Some(0.0), "{before}");
    assert_eq!(sample(&before, "nhiscope_registry_nhis"), Some(1.0));
    assert!(
        sample(&before, "nhiscope_probes_attached").is_some_and(|n| n > 0.0),
        "{before}"
    );
    assert_eq!(sample(&before, "nhiscope_ready"), Some(1.0));

    // An allowed reader, then one outside `readers` with a secret on its command line.
    let allowed = run(Command::new(&cat).arg(&cred).stdout(Stdio::null()));
    let code = format!("open('{}').read()", cred.display());
    let refused =
        run(Command::new(PYTHON).args(["-c", &code, &format!("--token={cmdline_canary}")]));
    let path = cred.to_str().expect("utf8");
    let e = d.wait_for(WAIT, |e| e["pid"] == allowed && e["path"] == path);
    assert_eq!(e["verdict"], "ok", "{e}");
    let e = d.wait_for(WAIT, |e| e["pid"] == refused && e["path"] == path);
    assert_eq!(e["verdict"], "drift", "{e}");
    assert!(
        e["cmdline"].to_string().contains(&cmdline_canary),
        "the daemon had the secret: {e}"
    );

    // Events are counted before they are written: the scrape after the event shows it.
    let after = scrape(addr);
    assert_eq!(sample(&after, ok_series), Some(1.0), "{after}");
    assert_eq!(sample(&after, drift_series), Some(1.0), "{after}");
    assert_eq!(sample(&after, reader_drift), Some(1.0), "{after}");
    for kind in [
        "endpoint_out_of_scope",
        "expired",
        "stale_credential",
        "interactive_use",
    ] {
        let s = format!("nhiscope_drift_total{{nhi=\"svc-metrics\",kind=\"{kind}\"}}");
        assert_eq!(sample(&after, &s), Some(0.0), "{s}\n{after}");
    }
    // What lives elsewhere is copied once a second.
    wait_scrape(addr, WAIT, |t| {
        sample(t, "nhiscope_kernel_records_total").is_some_and(|n| n >= 2.0)
    });
    assert!(
        sample(&after, "nhiscope_ringbuf_size_bytes").is_some_and(|n| n >= 4096.0),
        "{after}"
    );
    for family in [
        "nhiscope_build_info",
        "nhiscope_losses_total",
        "nhiscope_ringbuf_fill_ratio",
        "nhiscope_dns_cache_addresses",
        "nhiscope_dns_rejected_total",
        "nhiscope_parent_pipe_undetermined_total",
        "nhiscope_judged_destinations_forgotten_total",
        "nhiscope_live_clients",
        "nhiscope_registry_reloads_total",
        "nhiscope_registry_reload_failures_total",
    ] {
        assert!(sample_names(&after).contains(family), "{family}:\n{after}");
    }
    // No ClickHouse configured: no ClickHouse series (rather than zeros that look healthy).
    assert!(!after.contains("nhiscope_clickhouse_"), "{after}");

    // promtool's parser and linter accept the exposition as it is.
    let check = promtool_check(&after);
    assert!(
        check.status.success() && check.stdout.is_empty() && check.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        check.status,
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // No secret, however the daemon met it.
    for canary in [&content_canary, &cmdline_canary] {
        assert!(!after.contains(canary.as_str()), "{canary} in /metrics");
        assert!(!get(addr, "/healthz").1.contains(canary.as_str()));
    }

    // Registry reloads: a broken registry is refused and counted, a good one is counted and
    // its new NHI gets its drift series.
    replace_registry(&d, "nhis: [\n");
    let t = wait_scrape(addr, WAIT, |t| {
        sample(t, "nhiscope_registry_reload_failures_total") == Some(1.0)
    });
    assert_eq!(
        sample(&t, "nhiscope_registry_reloads_total"),
        Some(0.0),
        "{t}"
    );
    replace_registry(&d, &registry(&cred, &cat, true));
    let t = wait_scrape(addr, WAIT, |t| {
        sample(t, "nhiscope_registry_reloads_total") == Some(1.0)
    });
    assert_eq!(sample(&t, "nhiscope_registry_nhis"), Some(2.0), "{t}");
    assert_eq!(
        sample(
            &t,
            "nhiscope_drift_total{nhi=\"svc-added\",kind=\"expired\"}"
        ),
        Some(0.0),
        "{t}"
    );
    assert_eq!(
        sample(&t, "nhiscope_registry_reload_failures_total"),
        Some(1.0)
    );

    // A real Prometheus scrapes the daemon and answers queries over what it stored.
    let Some(prom) = Prometheus::start(&[addr]) else {
        return;
    };
    prom.wait_for("up{job=\"nhiscope\"}", PROM_WAIT, |r| {
        single_value(r) == Some(1.0)
    });
    let r = prom.wait_for(
        "nhiscope_drift_total{nhi=\"svc-metrics\",kind=\"reader_out_of_scope\"}",
        PROM_WAIT,
        |r| single_value(r) == Some(1.0),
    );
    assert_eq!(r[0]["metric"]["job"], "nhiscope", "{r:?}");
    prom.wait_for(
        "sum by (verdict) (nhiscope_events_total{kind=\"open\",verdict=~\"ok|drift\"})",
        PROM_WAIT,
        |r| {
            r.len() == 2
                && r.iter().all(|s| {
                    s["value"][1] == "1"
                        && (s["metric"]["verdict"] == "ok" || s["metric"]["verdict"] == "drift")
                })
        },
    );
    let r = prom.wait_for("nhiscope_build_info", PROM_WAIT, |r| !r.is_empty());
    assert_eq!(
        r[0]["metric"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{r:?}"
    );
    prom.wait_for("nhiscope_registry_nhis", PROM_WAIT, |r| {
        single_value(r) == Some(2.0)
    });
    // Everything Prometheus stored from the daemon, labels and values: no secret.
    let all = serde_json::to_string(&prom.query("{__name__=~\"nhiscope_.+\"}")).expect("json");
    assert!(all.contains("svc-metrics"), "{all}");
    for canary in [&content_canary, &cmdline_canary] {
        assert!(!all.contains(canary.as_str()), "{canary} in Prometheus");
    }
    drop(prom);
    assert_eq!(d.stop().code(), Some(0));
}

#[test]
fn a_metrics_address_that_is_not_one_is_exit_2_naming_the_flag() {
    let o = Command::new(nhiscope_bin())
        .args(["daemon", "--registry", "r.yaml", "--metrics", "notaport"])
        .output()
        .expect("run nhiscope");
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--metrics") && e.contains("notaport"), "{e}");
}

#[test]
fn a_metrics_port_in_use_stops_the_daemon_at_start_with_exit_2() {
    if !require_root_bpf() {
        return;
    }
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = temp_dir("metrics-in-use");
    let registry = dir.join("registry.yaml");
    std::fs::write(
        &registry,
        "nhis:\n  - id: svc\n    credentials: [/etc/nhiscope-none]\n",
    )
    .expect("registry");
    let o = Command::new(nhiscope_bin())
        .arg("daemon")
        .arg("--registry")
        .arg(&registry)
        .arg("--live-socket")
        .arg(dir.join("live.sock"))
        .arg("--metrics")
        .arg(addr.to_string())
        .env_remove("NHISCOPE_CLICKHOUSE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run nhiscope");
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains(&format!("--metrics {addr}")), "{e}");
    assert!(e.contains("in use"), "{e}");
    // It stopped before loading anything.
    assert!(!e.contains("probes attached"), "{e}");
    drop(taken);
}
