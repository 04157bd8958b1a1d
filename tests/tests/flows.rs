//! Where a secret goes after it is read: datagrams sent by holders (UDP, once per destination
//! per interval, not per packet), and the next command of a pipeline (`cat token | curl -d @-`),
//! without making the shell that started both sides a holder. Real processes, real daemon.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use nhiscope_tests::{
    procs::{run, PYTHON},
    require_root_bpf, temp_dir, Daemon,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// A credential whose NHI may only send to 127.0.0.1:443 and [::1]:443.
fn fixture(name: &str) -> (PathBuf, String) {
    let dir = std::fs::canonicalize(temp_dir(name)).expect("temp dir");
    let cred = dir.join("token");
    std::fs::write(&cred, "not-a-real-secret\n").expect("credential");
    let reg = format!(
        "nhis:\n  - id: app\n    credentials:\n      - {}\n    endpoints:\n      - cidr: 127.0.0.1/32\n        port: 443\n      - cidr: ::1/128\n        port: 443\n",
        cred.display()
    );
    (cred, reg)
}

fn connects(d: &Daemon, pid: u32) -> Vec<Value> {
    d.events()
        .into_iter()
        .filter(|e| e["kind"] == "connect" && e["pid"] == pid)
        .collect()
}

#[test]
fn datagrams_of_holders_are_judged_once_per_destination() {
    if !require_root_bpf() {
        return;
    }
    let (cred, reg) = fixture("udp");
    let d = Daemon::start(&reg);
    let code = format!(
        "import socket\n\
         open('{cred}').read()\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for _ in range(50): s.sendto(b'x', ('127.0.0.9', 5353))\n\
         s.sendto(b'x', ('127.0.0.1', 443))\n\
         c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         c.connect(('127.0.0.7', 53)); c.send(b'x')\n\
         s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
         s6.sendto(b'x', ('::1', 443)); s6.sendto(b'x', ('::1', 444))\n",
        cred = cred.display()
    );
    let pid = run(Command::new(PYTHON).arg("-c").arg(&code));
    d.wait_for(WAIT, |e| {
        e["kind"] == "connect" && e["pid"] == pid && e["dport"] == 444
    });
    let seen = connects(&d, pid);
    let to = |addr: &str, port: u64| -> Vec<&Value> {
        seen.iter()
            .filter(|e| e["daddr"] == addr && e["dport"] == port)
            .collect()
    };
    // Fifty datagrams to one place: one event.
    let spray = to("127.0.0.9", 5353);
    assert_eq!(spray.len(), 1, "{seen:#?}");
    assert_eq!(spray[0]["proto"], "udp");
    assert_eq!(spray[0]["verdict"], "drift");
    assert_eq!(spray[0]["drift"][0], "endpoint_out_of_scope");
    assert_eq!(to("127.0.0.1", 443)[0]["verdict"], "ok");
    // A connected UDP socket is seen at its connect, once.
    assert_eq!(to("127.0.0.7", 53).len(), 1, "{seen:#?}");
    assert_eq!(to("::1", 443)[0]["verdict"], "ok");
    assert_eq!(to("::1", 444)[0]["verdict"], "drift");
}

#[test]
fn the_next_command_of_a_pipeline_holds_what_a_holder_writes_into_it() {
    if !require_root_bpf() {
        return;
    }
    let (cred, reg) = fixture("pipeline");
    let d = Daemon::start(&reg);
    // `cat token | sender`, where the sender reads the secret from its stdin and connects;
    // the shell that started both sides then connects too, and must stay unjudged.
    let script = format!(
        "cat {cred} | {PYTHON} -c 'import socket, sys; sys.stdin.read(); socket.socket().connect_ex((\"127.0.0.1\", 9))'\n\
         {PYTHON} -c 'import socket; socket.socket().connect_ex((\"127.0.0.1\", 9))'\n\
         exec {PYTHON} -c 'import socket; socket.socket().connect_ex((\"127.0.0.1\", 9))'\n",
        cred = cred.display()
    );
    let shell = run(Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::null()));
    // The reader of the pipe connected, judged against the NHI's endpoints.
    let e = d.wait_for(WAIT, |e| {
        e["kind"] == "connect" && e["ppid"] == shell && e["comm"] != "cat"
    });
    assert_eq!(e["nhi"], "app", "{e}");
    assert_eq!(e["verdict"], "drift", "{e}");
    assert_eq!(e["proto"], "tcp", "{e}");
    let reader = e["pid"].as_u64().expect("pid");
    // Neither the shell's later child nor the shell itself (after exec) holds anything.
    std::thread::sleep(Duration::from_millis(500));
    let others: Vec<Value> = d
        .events()
        .into_iter()
        .filter(|e| {
            e["kind"] == "connect"
                && e["pid"] != reader
                && (e["pid"] == shell || e["ppid"] == shell)
        })
        .collect();
    assert!(others.is_empty(), "{others:#?}");
}
