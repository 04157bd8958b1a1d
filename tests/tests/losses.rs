//! Overflow accounting, as root: with a ring buffer made tiny on purpose, every watched open is
//! either delivered as an event or counted in a `loss` event, exactly. (Its own test binary:
//! cargo runs test binaries one at a time, so no other test's opens share the count.)

use std::{process::Command, time::Duration};

use serde_json::Value;

use nhiscope_tests::{
    procs::{run, PYTHON},
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
    let args: Vec<&std::ffi::OsStr> = ["--ringbuf-size", "4096"]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
    let d = Daemon::start_with(&yaml, &args);
    const N: u64 = 20_000;
    let code = format!(
        "import os\nfor _ in range({N}):\n    os.close(os.open('{}', os.O_RDONLY))\n",
        cred.display()
    );
    let pid = run(Command::new(PYTHON).args(["-c", &code]));
    std::thread::sleep(Duration::from_millis(1500));
    let path = d.events_path().to_path_buf();
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
        .filter(|e| {
            matches!(
                e["cause"].as_str(),
                Some("ringbuf_full_open" | "pending_map_full")
            )
        })
        .map(|e| e["count"].as_u64().expect("count"))
        .sum();
    eprintln!("{N} opens: {delivered} delivered, {lost} counted lost");
    assert!(
        lost > 0,
        "the ring buffer never overflowed ({delivered} delivered): the test proves nothing"
    );
    assert!(delivered > 0, "nothing was delivered");
    assert_eq!(
        delivered + lost,
        N,
        "delivered {delivered} + lost {lost} != {N} opens"
    );
}
