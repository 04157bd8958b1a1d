//! ClickHouse over TLS, against a real local ClickHouse 18.16 serving HTTPS with a certificate
//! signed by a CA the test makes: `db migrate`, `query` and `scope suggest` verify the server
//! with `ca_file:` (and refuse it with the system roots or another CA), a client certificate is
//! offered when the server requires one, bad TLS files are exit 2 naming the file and the key,
//! and the daemon stores its events over HTTPS, keeping them spooled while the CA is wrong.
//! Whatever is printed shows the URL as `scheme://host:port`, and never the password.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use nhiscope_tests::{
    clickhouse::{free_port, WRITER_PASSWORD, WRITER_USER},
    nhiscope_bin, require_root_bpf, run_nhiscope as nhiscope, temp_dir,
    tls::{Pki, TlsClickHouse},
    Daemon,
};

fn text(o: &Output) -> (Option<i32>, String, String) {
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A ClickHouse config file for `url` as the writer user (password in a file), with `extra`
/// YAML lines (`ca_file: ...`).
fn config(dir: &Path, name: &str, url: &str, extra: &str) -> PathBuf {
    let pw = dir.join("password");
    std::fs::write(&pw, format!("{WRITER_PASSWORD}\n")).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "url: {url}\nuser: {WRITER_USER}\npassword_file: {}\nspool_dir: {}\n\
             batch_interval: 100ms\nretry_max: 500ms\n{extra}",
            pw.display(),
            dir.join("spool").display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    path
}

fn no_password(what: &str, s: &str) {
    assert!(
        !s.contains(WRITER_PASSWORD),
        "{what} shows the password: {s}"
    );
}

#[test]
fn commands_reach_clickhouse_over_https_verified_with_the_ca_file_only() {
    let pki = Pki::make("commands");
    let Some(server) = TlsClickHouse::start("tls-commands", &pki, false) else {
        return;
    };
    let dir = temp_dir("tls-commands");
    let url = server.https_url();
    let good = config(
        &dir,
        "good.yaml",
        &url,
        &format!("ca_file: {}\n", pki.ca.display()),
    );
    let good = good.to_str().unwrap_or_else(|| panic!("path"));

    let (code, out, err) = text(&nhiscope(&["db", "migrate", "--clickhouse-config", good]));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with(&format!("{url}: database `nhiscope`")),
        "{out}"
    );
    no_password("db migrate", &(out.clone() + &err));
    assert!(
        server
            .ch
            .query_u64("SELECT count() FROM system.tables WHERE database = 'nhiscope'")
            >= 3,
        "the tables were created"
    );
    // The URL of the flag wins and goes over TLS with the file's ca_file as well.
    let (code, out, err) = text(&nhiscope(&[
        "query",
        "agents",
        "--clickhouse",
        &url,
        "--clickhouse-config",
        good,
        "--format",
        "json",
    ]));
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = text(&nhiscope(&[
        "scope",
        "suggest",
        "--nhi",
        "nobody",
        "--clickhouse-config",
        good,
    ]));
    assert!(code == Some(0) || code == Some(1), "{out}{err}");
    assert!(
        !err.contains("certificate") && !err.contains("connect"),
        "{err}"
    );
    no_password("scope suggest", &(out + &err));

    // The system's roots are where SSL_CERT_FILE says: with the test's CA there, no ca_file is
    // needed.
    let roots = config(&dir, "roots.yaml", &url, "");
    let out = Command::new(nhiscope_bin())
        .args(["db", "migrate", "--clickhouse-config"])
        .arg(&roots)
        .env("SSL_CERT_FILE", &pki.ca)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, out, err) = text(&out);
    assert_eq!(code, Some(0), "with SSL_CERT_FILE: {out}{err}");

    // The same server, verified with the system's roots (the default) or another CA: refused,
    // saying why, with the URL as scheme://host:port and no password.
    let other = config(
        &dir,
        "other.yaml",
        &url,
        &format!("ca_file: {}\n", pki.other_ca.display()),
    );
    for cfg in [&roots, &other] {
        let cfg = cfg.to_str().unwrap_or_else(|| panic!("path"));
        let (code, out, err) = text(&nhiscope(&["db", "migrate", "--clickhouse-config", cfg]));
        assert_eq!(code, Some(1), "{cfg}: {out}{err}");
        assert!(err.contains(&format!("ClickHouse {url}:")), "{cfg}: {err}");
        assert!(
            err.contains("certificate") || err.contains("UnknownIssuer"),
            "{cfg}: the error says it is the certificate: {err}"
        );
        no_password("a refused migrate", &(out + &err));
        let (code, _, err) = text(&nhiscope(&["query", "agents", "--clickhouse-config", cfg]));
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(&format!("ClickHouse {url}:")), "{cfg}: {err}");
    }
}

#[test]
fn a_client_certificate_is_offered_when_the_server_requires_one() {
    let pki = Pki::make("client");
    let Some(server) = TlsClickHouse::start("tls-client", &pki, true) else {
        return;
    };
    let dir = temp_dir("tls-client");
    let url = server.https_url();
    let ca = format!("ca_file: {}\n", pki.ca.display());
    let without = config(&dir, "without.yaml", &url, &ca);
    let (code, out, err) = text(&nhiscope(&[
        "db",
        "migrate",
        "--clickhouse-config",
        without.to_str().unwrap_or_default(),
    ]));
    assert_eq!(
        code,
        Some(1),
        "a server that requires a certificate refused: {out}{err}"
    );
    let with = config(
        &dir,
        "with.yaml",
        &url,
        &format!(
            "{ca}client_cert_file: {}\nclient_key_file: {}\n",
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    );
    let (code, out, err) = text(&nhiscope(&[
        "db",
        "migrate",
        "--clickhouse-config",
        with.to_str().unwrap_or_default(),
    ]));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with(&format!("{url}: ")), "{out}");
}

#[test]
fn bad_tls_files_and_urls_are_exit_2_naming_the_file_and_key() {
    let pki = Pki::make("bad");
    let dir = temp_dir("tls-bad");
    let url = format!("https://127.0.0.1:{}", free_port());
    let key_canary = "tls-key-canary-61c2";
    let bad_key = dir.join("bad.key");
    std::fs::write(
        &bad_key,
        format!("-----BEGIN PRIVATE KEY-----\n{key_canary}\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.join("missing-ca.pem");
    let cases = [
        (
            format!("ca_file: {}\n", missing.display()),
            "ca_file",
            missing.clone(),
        ),
        (
            format!("ca_file: {}\n", pki.server_key.display()),
            "ca_file",
            pki.server_key.clone(),
        ),
        (
            format!(
                "ca_file: {}\nclient_cert_file: {}\nclient_key_file: {}\n",
                pki.ca.display(),
                pki.client_cert.display(),
                bad_key.display()
            ),
            "client_key_file",
            bad_key.clone(),
        ),
        (
            // A key that is not the certificate's.
            format!(
                "client_cert_file: {}\nclient_key_file: {}\n",
                pki.client_cert.display(),
                pki.server_key.display()
            ),
            "client_key_file",
            pki.server_key.clone(),
        ),
    ];
    for (i, (yaml, key, file)) in cases.iter().enumerate() {
        let cfg = config(&dir, &format!("bad-{i}.yaml"), &url, yaml);
        let cfg_s = cfg.to_str().unwrap_or_default();
        let registry = dir.join("registry.yaml");
        std::fs::write(&registry, "nhis: []\n").unwrap_or_else(|e| panic!("{e}"));
        for args in [
            vec!["db", "migrate", "--clickhouse-config", cfg_s],
            vec!["query", "agents", "--clickhouse-config", cfg_s],
            vec![
                "daemon",
                "--registry",
                registry.to_str().unwrap_or_default(),
                "--clickhouse-config",
                cfg_s,
            ],
        ] {
            let (code, out, err) = text(&nhiscope(&args));
            assert_eq!(code, Some(2), "{args:?} with {yaml}: {out}{err}");
            let named = format!("{}: {key} {}", cfg.display(), file.display());
            assert!(err.contains(&named), "{args:?}: `{named}` not in: {err}");
            assert!(!err.contains(key_canary), "the key's text is shown: {err}");
            assert!(
                !err.contains("BEGIN PRIVATE"),
                "the file's text is shown: {err}"
            );
            no_password("a bad TLS file", &err);
        }
    }
    // A URL is never echoed beyond scheme://host:port, even when it is refused.
    let (code, _, err) = text(&nhiscope(&[
        "db",
        "migrate",
        "--clickhouse",
        "https://admin:url-canary-pw@ch.example:8443/db?password=url-canary-pw",
    ]));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--clickhouse https://ch.example:8443:"),
        "{err}"
    );
    assert!(
        !err.contains("url-canary-pw") && !err.contains("admin"),
        "{err}"
    );
}

/// A credential file and a registry naming it.
fn registry(dir: &Path) -> (PathBuf, String) {
    let cred = dir.join("token");
    std::fs::write(&cred, "not-a-real-secret\n").unwrap_or_else(|e| panic!("{e}"));
    let yaml = format!(
        "nhis:\n  - id: svc\n    credentials: [{}]\n",
        cred.display()
    );
    (cred, yaml)
}

/// `n` reads of `cred` by one python3 process; returns its pid.
fn read_n(cred: &Path, n: u32) -> u32 {
    let script = format!(
        "for i in range({n}):\n    open('{}').read()\n",
        cred.display()
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .spawn()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let pid = child.id();
    let status = child.wait().unwrap_or_else(|e| panic!("python3: {e}"));
    assert!(status.success());
    pid
}

#[test]
fn the_daemon_stores_over_https_and_keeps_events_spooled_while_the_ca_is_wrong() {
    if !require_root_bpf() {
        return;
    }
    let pki = Pki::make("daemon");
    let Some(server) = TlsClickHouse::start("tls-daemon", &pki, false) else {
        return;
    };
    let dir = std::fs::canonicalize(temp_dir("tls-daemon")).unwrap_or_else(|e| panic!("{e}"));
    let url = server.https_url();
    let (cred, reg) = registry(&dir);
    let stored = |pid: u32| {
        if server.ch.query_u64(
            "SELECT count() FROM system.tables WHERE database = 'nhiscope' AND name = 'events'",
        ) == 0
        {
            return 0;
        }
        server.ch.query_u64(&format!(
            "SELECT count() FROM nhiscope.events WHERE kind = 'open' AND pid = {pid}"
        ))
    };

    // The wrong CA: the daemon refuses the server, says why, and spools.
    let wrong = config(
        &dir,
        "wrong.yaml",
        &url,
        &format!("ca_file: {}\n", pki.other_ca.display()),
    );
    let d = Daemon::start_with(&reg, &["--clickhouse-config".as_ref(), wrong.as_os_str()]);
    let first = read_n(&cred, 40);
    d.wait_for(Duration::from_secs(10), |e| {
        e["kind"] == "open" && e["pid"] == first && e["path"] == cred.to_string_lossy().as_ref()
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        if let Some(l) = d
            .output()
            .into_iter()
            .find(|l| l.contains(&format!("ClickHouse {url}:")) && l.contains("spool"))
        {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no refusal logged: {:?}",
            d.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        refused.contains("certificate") || refused.contains("UnknownIssuer"),
        "the log says it is the certificate: {refused}"
    );
    let (status, lines) = d.stop_with_output();
    assert!(status.success(), "{status}");
    for l in &lines {
        no_password("the daemon's output", l);
    }
    assert_eq!(stored(first), 0, "nothing went through with the wrong CA");

    // The right CA, the same spool: what was spooled and what comes now are stored, once.
    let right = config(
        &dir,
        "right.yaml",
        &url,
        &format!("ca_file: {}\n", pki.ca.display()),
    );
    let d = Daemon::start_with(&reg, &["--clickhouse-config".as_ref(), right.as_os_str()]);
    let second = read_n(&cred, 40);
    let deadline = Instant::now() + Duration::from_secs(30);
    while (stored(first) < 40 || stored(second) < 40) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, lines) = d.stop_with_output();
    assert!(status.success(), "{status}");
    assert_eq!(
        stored(first),
        40,
        "the events spooled while the CA was wrong"
    );
    assert_eq!(stored(second), 40, "the events sent over https");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("ClickHouse {url} (18.16"))),
        "the connection is logged with scheme://host:port: {lines:?}"
    );
    for l in &lines {
        no_password("the daemon's output", l);
    }
}
