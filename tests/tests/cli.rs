//! The binary's handling of bad input: a clear message naming the problem, exit code 2.

use std::process::Command;

use nhiscope_tests::{nhiscope_bin, run_nhiscope as nhiscope, stderr_of as stderr, temp_dir};

#[test]
fn unknown_flag_is_exit_2() {
    let o = nhiscope(&["daemon", "--registry", "x.yaml", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--no-such-flag"), "{}", stderr(&o));
}

#[test]
fn missing_registry_is_named() {
    let o = nhiscope(&["daemon", "--registry", "/nonexistent/registry.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("/nonexistent/registry.yaml"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn invalid_registry_names_file_line_and_column() {
    let dir = temp_dir("cli-invalid");
    let file = dir.join("registry.yaml");
    std::fs::write(
        &file,
        "nhis:\n  - id: ok-one\n    credentials: [/etc/x]\n    colour: blue\n",
    )
    .expect("write");
    for args in [
        vec!["registry", "check", file.to_str().expect("utf8")],
        vec!["daemon", "--registry", file.to_str().expect("utf8")],
    ] {
        let o = nhiscope(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let e = stderr(&o);
        assert!(
            e.contains(&format!("{}:4:", file.display())),
            "{args:?}: {e}"
        );
        assert!(e.contains("colour"), "{e}");
    }
}

#[test]
fn valid_registry_checks_ok() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/registry.yaml");
    let o = nhiscope(&["registry", "check", example]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok"));
}

#[test]
fn daemon_as_non_root_is_exit_2() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let o = nhiscope(&[
            "daemon",
            "--registry",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/registry.yaml"),
        ]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("root"));
        return;
    }
    use std::os::unix::process::CommandExt;
    let o = Command::new(nhiscope_bin())
        .args([
            "daemon",
            "--registry",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/registry.yaml"),
        ])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("must run as root"), "{}", stderr(&o));
}

#[test]
fn dashboard_history_flags_are_checked_before_the_terminal() {
    // History flags without a ClickHouse to read it from.
    let o = nhiscope(&["tui", "--since", "24h", "--host", "web-1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("--since, --host") && e.contains("--clickhouse"),
        "{e}"
    );
    // A window that is not a duration, a refresh too often, a bad URL.
    for (args, needle) in [
        (vec!["tui", "--since", "yesterday"], "yesterday"),
        (vec!["tui", "--refresh", "10ms"], "at least 1s"),
        (
            vec!["tui", "--clickhouse", "ftp://ch:21", "--since", "1h"],
            "ftp://ch:21",
        ),
    ] {
        let o = nhiscope(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
    // Every flag is documented.
    let help = nhiscope(&["tui", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--since",
        "--host",
        "--no-live",
        "--refresh",
        "--clickhouse",
        "--socket",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}

#[test]
fn the_clickhouse_url_can_come_from_the_environment() {
    let o = Command::new(nhiscope_bin())
        .args(["query", "agents"])
        .env("NHISCOPE_CLICKHOUSE_URL", "ftp://ch.example:21")
        .output()
        .expect("run nhiscope");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("ftp://ch.example:21"), "{}", stderr(&o));
}

#[test]
fn an_expiry_the_daemon_cannot_represent_is_refused_where_it_is_written() {
    let dir = temp_dir("cli-expiry");
    let file = dir.join("registry.yaml");
    std::fs::write(
        &file,
        "nhis:\n  - id: far\n    credentials: [/etc/far]\n    expires: 9999-12-31T23:59:59-23:00\n",
    )
    .expect("write");
    for args in [
        vec!["registry", "check", file.to_str().expect("utf8")],
        vec!["daemon", "--registry", file.to_str().expect("utf8")],
    ] {
        let o = nhiscope(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(
            e.contains(&format!("{}:4:", file.display())),
            "{args:?}: {e}"
        );
        assert!(e.contains("out of range"), "{e}");
        assert!(!e.contains("panicked"), "{e}");
    }
}
