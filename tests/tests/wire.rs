//! Which API a holder talks to, as root: real curl and Python clients against local TLS and
//! HTTP servers (Python's `http.server`, with a self-made certificate for TLS), the daemon
//! reading the first bytes of the holders' connections in the kernel. Each test asserts the
//! `request` event's fields and verdict, or that no byte of a request but the fields it names
//! reaches any output.
#![expect(
    clippy::expect_used,
    reason = "helpers fail the running test by panicking, naming the step, as the tests do"
)]

use std::{
    io::{BufRead as _, BufReader},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nhiscope_tests::{
    procs::{run, PYTHON},
    require_root_bpf, temp_dir,
    tls::Pki,
    Daemon,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// A directory with one credential file, `<dir>/token`.
fn credential(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::fs::canonicalize(temp_dir(name)).expect("temp dir");
    let cred = dir.join("token");
    std::fs::write(&cred, "not-a-real-secret\n").expect("credential");
    (dir, cred)
}

fn registry(cred: &Path, endpoints: &str) -> String {
    format!(
        "nhis:\n  - id: svc\n    credentials: [{}]\n    endpoints:\n{endpoints}",
        cred.display()
    )
}

/// An HTTP server (HTTPS with `tls`: the certificate and key) on `addr`, answering every GET
/// and POST with `ok`; killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(addr: &str, tls: Option<&Pki>) -> Server {
        let wrap = match tls {
            Some(p) => format!(
                "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
                 ctx.set_alpn_protocols(['http/1.1'])\n\
                 ctx.load_cert_chain('{}', '{}')\n\
                 srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n",
                p.server_cert.display(),
                p.server_key.display()
            ),
            None => String::new(),
        };
        let code = format!(
            r#"import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.0'
    def do_GET(self):
        n = int(self.headers.get('Content-Length') or 0)
        if n: self.rfile.read(n)
        self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers()
        self.wfile.write(b'ok')
    do_POST = do_GET
    def log_message(self, *a): pass
srv = http.server.HTTPServer(('{addr}', 0), H)
{wrap}print(srv.server_address[1], flush=True)
srv.serve_forever()
"#
        );
        let mut child = Command::new(PYTHON)
            .args(["-c", &code])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server's port");
        let port = line.trim().parse().expect("a port number");
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sh -c 'TOKEN=$(cat CRED); exec curl ARGS'`: the shell gets the secret from its command
/// substitution and becomes curl (same pid), which makes one call. Returns that pid.
fn holder_curl(cred: &Path, args: &str) -> u32 {
    run(Command::new("sh").args([
        "-c",
        &format!(
            "TOKEN=$(cat '{}'); exec curl -s -o /dev/null --max-time 5 {args}",
            cred.display()
        ),
    ]))
}

fn request_of(e: &Value, pid: u32) -> bool {
    e["kind"] == "request" && e["pid"] == pid
}

#[test]
fn a_holder_s_https_call_shows_its_server_name_and_alpn_and_an_undeclared_name_is_drift() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("wire-tls");
    let pki = Pki::make("wire-tls");
    let srv = Server::start("127.0.0.1", Some(&pki));
    let port = srv.port;
    let d = Daemon::start(&registry(
        &cred,
        &format!(
            "      - cidr: 127.0.0.1/32\n        port: {port}\n        sni: [api.wire.test]\n"
        ),
    ));
    let pid = holder_curl(
        &cred,
        &format!("-k --resolve api.wire.test:{port}:127.0.0.1 https://api.wire.test:{port}/v1/x"),
    );
    let e = d.wait_for(WAIT, |e| request_of(e, pid));
    assert_eq!(e["sni"], "api.wire.test", "{e}");
    let alpn = e["alpn"].as_array().expect("alpn");
    assert!(alpn.contains(&json!("http/1.1")), "{e}");
    assert_eq!(e["tls_version"], "1.3", "{e}");
    assert_eq!(e["daddr"], "127.0.0.1");
    assert_eq!(e["dport"], port);
    assert_eq!(e["nhi"], "svc");
    assert_eq!(e["verdict"], "ok", "{e}");
    assert!(
        e.get("http_path").is_none(),
        "no path is seen inside TLS: {e}"
    );

    // The same address, another server name: the address is allowed, the API is not.
    let pid = holder_curl(
        &cred,
        &format!(
            "-k --resolve billing.wire.test:{port}:127.0.0.1 https://billing.wire.test:{port}/"
        ),
    );
    let e = d.wait_for(WAIT, |e| request_of(e, pid));
    assert_eq!(e["sni"], "billing.wire.test", "{e}");
    assert_eq!(e["verdict"], "drift", "{e}");
    assert_eq!(e["drift"], json!(["api_out_of_scope"]), "{e}");
    let reason = e["reason"].as_str().expect("reason");
    assert!(
        reason.contains("billing.wire.test") && reason.contains("NHI svc"),
        "{reason}"
    );
}

#[test]
fn a_plaintext_call_shows_method_host_and_path_and_undeclared_ones_are_drift() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("wire-http");
    let srv = Server::start("127.0.0.1", None);
    let port = srv.port;
    let d = Daemon::start(&registry(
        &cred,
        &format!(
            "      - cidr: 127.0.0.1/32\n        port: {port}\n        methods: [GET]\n        paths: ['/v1/*']\n"
        ),
    ));
    let pid = holder_curl(
        &cred,
        &format!("--resolve api.wire.test:{port}:127.0.0.1 'http://api.wire.test:{port}/v1/items?page=2#top'"),
    );
    let e = d.wait_for(WAIT, |e| request_of(e, pid));
    assert_eq!(e["http_method"], "GET", "{e}");
    assert_eq!(e["http_host"], format!("api.wire.test:{port}"), "{e}");
    assert_eq!(e["http_path"], "/v1/items", "{e}");
    assert!(e.get("sni").is_none(), "{e}");
    assert_eq!(e["verdict"], "ok", "{e}");

    let pid = holder_curl(
        &cred,
        &format!("-X DELETE 'http://127.0.0.1:{port}/v2/items?id=1'"),
    );
    let e = d.wait_for(WAIT, |e| request_of(e, pid));
    assert_eq!(e["http_method"], "DELETE", "{e}");
    assert_eq!(e["http_path"], "/v2/items", "{e}");
    assert_eq!(e["drift"], json!(["api_out_of_scope"]), "{e}");
}

/// A DNS server on loopback that answers `api.wire.test` with 127.0.0.25.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(listen: &str) -> Self {
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--port=53",
                "--pid-file=",
                "--user=root",
                &format!("--listen-address={listen}"),
                "--address=/api.wire.test/127.0.0.25",
            ])
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (installed by `cargo xtask setup`)");
        Self(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_server_name_dns_never_gave_for_the_address_is_a_name_mismatch() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("wire-dns");
    let _dns = Dnsmasq::start("127.0.0.154");
    let srv = Server::start("127.0.0.25", Some(&Pki::make("wire-dns")));
    let port = srv.port;
    let d = Daemon::start(&registry(
        &cred,
        &format!("      - host: \"*.test\"\n        port: {port}\n"),
    ));
    // Python reads the credential, asks the DNS server for api.wire.test (until it answers:
    // dnsmasq may still be starting), then makes two TLS calls to the address it got: one
    // asking for that name, one for another (a fronted name).
    let script = dir.join("client.py");
    std::fs::write(
        &script,
        format!(
            r#"import socket, ssl, struct, time
open('{cred}').read()
q = struct.pack('>HHHHHH', 0x4243, 0x0100, 1, 0, 0, 0)
q += b''.join(bytes([len(l)]) + l.encode() for l in 'api.wire.test'.split('.')) + b'\x00' + struct.pack('>HH', 1, 1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(0.5)
for _ in range(40):
    u.sendto(q, ('127.0.0.154', 53))
    try:
        r = u.recv(512)
        break
    except socket.timeout:
        pass
ip = socket.inet_ntoa(r[-4:])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
for name in ['api.wire.test', 'front.other.test']:
    s = ctx.wrap_socket(socket.create_connection((ip, {port})), server_hostname=name)
    s.sendall(b'GET / HTTP/1.0\r\n\r\n'); s.recv(100); s.close()
"#,
            cred = cred.display()
        ),
    )
    .expect("client script");
    let pid = run(Command::new(PYTHON).arg(&script));
    let ok = d.wait_for(WAIT, |e| request_of(e, pid) && e["sni"] == "api.wire.test");
    assert_eq!(ok["daddr"], "127.0.0.25", "{ok}");
    assert_eq!(ok["dns_names"], json!(["api.wire.test"]), "{ok}");
    assert_eq!(ok["verdict"], "ok", "{ok}");
    let e = d.wait_for(WAIT, |e| {
        request_of(e, pid) && e["sni"] == "front.other.test"
    });
    assert_eq!(e["verdict"], "drift", "{e}");
    assert_eq!(e["drift"], json!(["name_mismatch"]), "{e}");
    assert!(
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("front.other.test")),
        "{e}"
    );
}

#[test]
fn no_byte_of_a_header_value_body_or_query_reaches_any_output_and_non_holders_send_no_request() {
    if !require_root_bpf() {
        return;
    }
    let (dir, cred) = credential("wire-canary");
    let plain = Server::start("127.0.0.1", None);
    let pki = Pki::make("wire-canary");
    let tls = Server::start("127.0.0.1", Some(&pki));
    let d = Daemon::start_with(
        &registry(&cred, "      - cidr: 127.0.0.1/32\n"),
        &["--log-level".as_ref(), "debug".as_ref()],
    );
    let live = UnixStream::connect(d.live_socket()).expect("the live socket");
    live.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut live = BufReader::new(live);

    // A process that holds nothing: its connection is not read.
    let other = run(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{}/not-a-holder", plain.port),
    ]));

    // The canary is in curl's config file, not its command line (which events carry).
    const CANARY: &str = "wirecanary7f3a9c";
    let config = dir.join("curl.conf");
    std::fs::write(
        &config,
        format!(
            "url = \"http://127.0.0.1:{p}/upload?key={CANARY}\"\n\
             header = \"X-Api-Key: {CANARY}\"\n\
             data = \"secret={CANARY}\"\n\
             next\n\
             url = \"https://127.0.0.1:{t}/v1/x?key={CANARY}\"\n\
             insecure\n\
             output = \"/dev/null\"\n\
             header = \"Authorization: Bearer {CANARY}\"\n\
             data = \"secret={CANARY}\"\n",
            p = plain.port,
            t = tls.port,
        ),
    )
    .expect("curl config");
    let pid = holder_curl(&cred, &format!("-K '{}'", config.display()));
    let http = d.wait_for(WAIT, |e| request_of(e, pid) && e["dport"] == plain.port);
    assert_eq!(http["http_method"], "POST", "{http}");
    assert_eq!(http["http_path"], "/upload", "{http}");
    let tls_req = d.wait_for(WAIT, |e| request_of(e, pid) && e["dport"] == tls.port);
    assert_eq!(tls_req["tls_version"], "1.3", "{tls_req}");

    // The live feed has seen both requests (in order, after the non-holder's call).
    let started = Instant::now();
    let mut lines = Vec::new();
    let mut seen = 0;
    while seen < 2 {
        assert!(
            started.elapsed() < WAIT,
            "the live feed did not show both requests"
        );
        let mut line = String::new();
        match live.read_line(&mut line) {
            Ok(0) => panic!("the live feed closed"),
            Ok(_) if line.ends_with('\n') => {}
            _ => continue,
        }
        if line.contains("\"request\"") && line.contains(&format!("\"pid\":{pid}")) {
            seen += 1;
        }
        lines.push(line);
    }
    let events = std::fs::read_to_string(d.events_path()).expect("the events file");
    let stderr = d.output().join("\n");
    for (what, text) in [
        ("the events file", events.as_str()),
        ("the daemon's output", stderr.as_str()),
        ("the live feed", &lines.concat()),
    ] {
        assert!(!text.contains(CANARY), "{what} has the canary:\n{text}");
    }
    assert!(
        !d.events().iter().any(|e| request_of(e, other)),
        "a process that holds nothing sent a request event"
    );
}

#[test]
fn with_wire_all_connections_a_non_holder_s_request_is_read_without_an_nhi() {
    if !require_root_bpf() {
        return;
    }
    let (_dir, cred) = credential("wire-all");
    let srv = Server::start("127.0.0.1", None);
    let d = Daemon::start_with(
        &registry(&cred, "      - cidr: 127.0.0.1/32\n"),
        &["--wire-all-connections".as_ref()],
    );
    let pid = run(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{}/status?x=1", srv.port),
    ]));
    let e = d.wait_for(WAIT, |e| request_of(e, pid));
    assert_eq!(e["http_path"], "/status", "{e}");
    assert_eq!(e["nhi"], Value::Null, "{e}");
    assert_eq!(e["verdict"], "ok", "{e}");
}
