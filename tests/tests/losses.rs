//! Overflow accounting, as root: with a ring buffer made tiny on purpose, every watched open is
//! either delivered as an event or counted in a `loss` event, exactly. (Its own test binary:
//! cargo runs test binaries one at a time, so no other test's opens share the count.)
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{process::Command, time::Duration};

use serde_json::Value;

use nhiscope_tests::{
    procs::{run, PYTHON},
    prometheus::{metrics_addr, sample, scrape},
    require_root_bpf, temp_dir, Daemon,
};

#[test]
fn a_tiny_ring_buffer_loses_events_and_counts_every_one() {
    if !require_root_bpf() {
        return;
    }
    let dir = std::fs::canonicalize(temp_dir("losses")).expect("dir");
    let cred = dir.join("burst-token");
    std::fs::write(&cred, "x").expect("credential");
    let yaml = format!(
        "nhis:\n  - id: burst\n    credentials: [{}]\n",
        cred.display()
    );
    let args: Vec<&std::ffi::OsStr> = ["--ringbuf-size", "4096", "--metrics", "127.0.0.1:0"]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
    let d = Daemon::start_with(&yaml, &args);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let health = watch_ring_fill(&d.live_socket(), std::sync::Arc::clone(&stop));
    const N: u64 = 20_000;
    let code = format!(
        "import os\nfor _ in range({N}):\n    os.close(os.open('{}', os.O_RDONLY))\n",
        cred.display()
    );
    let pid = run(Command::new(PYTHON).args(["-c", &code]));
    // Health is reported once a second: two more reports cover the end of the burst, however
    // long the burst took on this machine.
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let metrics = scrape(metrics_addr(&d));
    let path = d.events_path().to_path_buf();
    let (peak_fill, ring_bytes) = health.join().expect("the health reader");
    // SIGTERM: the daemon drains the ring buffer and reports the last losses before it exits.
    assert_eq!(d.stop().code(), Some(0));
    let events: Vec<Value> = std::fs::read_to_string(&path)
        .expect("events")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let delivered = events
        .iter()
        .filter(|e| e["kind"] == "open" && e["pid"] == pid)
        .count() as u64;
    let lost: u64 = events
        .iter()
        .filter(|e| e["kind"] == "loss")
        .filter(|e| matches!(e["cause"].as_str(), Some("ringbuf_full_open")))
        .map(|e| e["count"].as_u64().expect("count"))
        .sum();
    eprintln!("{N} opens: {delivered} delivered, {lost} counted lost");
    assert!(
        lost > 0,
        "the ring buffer never overflowed ({delivered} delivered): the test proves nothing"
    );
    assert!(delivered > 0, "nothing was delivered");
    // The metrics count the same losses, by cause: all of them once the burst is over (the
    // final drain at exit may only add more).
    let counted = sample(
        &metrics,
        "nhiscope_losses_total{cause=\"ringbuf_full_open\"}",
    )
    .unwrap_or_else(|| panic!("no ringbuf_full_open losses series:\n{metrics}"));
    assert!(
        counted > 0.0 && counted <= lost as f64,
        "nhiscope_losses_total{{cause=\"ringbuf_full_open\"}} is {counted}, {lost} lost"
    );
    assert_eq!(
        delivered + lost,
        N,
        "delivered {delivered} + lost {lost} != {N} opens"
    );
    // The live feed's health said how full the ring buffer got: it overflowed, so at some
    // wakeup it was found well filled.
    eprintln!("ring buffer peak fill reported: {peak_fill:.2} of {ring_bytes} bytes");
    assert_eq!(ring_bytes, 4096);
    assert!(
        peak_fill >= 0.5,
        "the ring buffer overflowed but its peak fill was reported as {peak_fill}"
    );
}

/// Reads the daemon's live feed for a few seconds: the highest `ringbuf_fill` of its health
/// messages and the ring buffer size they give.
/// Reads the live feed's health reports until `stop`, keeping the highest ring fill seen.
fn watch_ring_fill(
    socket: &std::path::Path,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(f64, u64)> {
    use std::io::BufRead as _;
    let stream = std::os::unix::net::UnixStream::connect(socket).expect("the live socket");
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    std::thread::spawn(move || {
        let (mut peak, mut size) = (0f64, 0u64);
        let mut reader = std::io::BufReader::new(stream);
        // A line cut by the read timeout stays in `line` and is completed by the next read.
        let mut line = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) if line.ends_with(b"\n") => {}
                _ => continue,
            }
            let m: Value = serde_json::from_slice(&line).expect("a live message");
            line.clear();
            let h = &m["health"];
            if let Some(f) = h["ringbuf_fill"].as_f64() {
                peak = peak.max(f);
            }
            if let Some(b) = h["ringbuf_bytes"].as_u64() {
                size = b;
            }
        }
        (peak, size)
    })
}
