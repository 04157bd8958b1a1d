use super::*;

const EXAMPLE: &str = include_str!("../../../../examples/daemon.yaml");

fn at(text: &str) -> Result<ConfigFile, Vec<Problem>> {
    parse(text, Path::new("/etc/nhiscope/config.yaml"))
}

/// The problems of `text` as printed, one a line.
fn errors(text: &str) -> Vec<String> {
    match at(text) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(p) => p.iter().map(ToString::to_string).collect(),
    }
}

fn resolved(text: &str, flags: &Flags) -> Result<Settings, Vec<String>> {
    let file = at(text).unwrap_or_else(|p| panic!("{}", lines(&p)));
    Settings::resolve(Some(&file), flags).map_err(|p| p.iter().map(ToString::to_string).collect())
}

/// The example with every commented-out setting (`#key:` at the start of a line, `#  key:`
/// under `#clickhouse:`) uncommented.
fn example_uncommented() -> String {
    let is_setting = |rest: &str| {
        let (indent, body) = (rest.len() - rest.trim_start().len(), rest.trim_start());
        let key_len = body
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
            .count();
        (indent == 0 || indent >= 2) && key_len > 0 && body[key_len..].starts_with(':')
    };
    EXAMPLE
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if is_setting(rest) => rest.to_owned(),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_is_valid_as_shipped_and_with_every_setting_uncommented() {
    let shipped = at(EXAMPLE).unwrap_or_else(|p| panic!("{}", lines(&p)));
    assert_eq!(
        shipped.config.registry.as_deref(),
        Some(Path::new("/etc/nhiscope/registry.yaml"))
    );
    let s = Settings::resolve(Some(&shipped), &Flags::default()).expect("resolves");
    assert_eq!(s.json.as_deref(), Some("/var/log/nhiscope/events.jsonl"));
    assert_eq!(
        s.live_socket,
        Path::new(crate::publish::live::DEFAULT_SOCKET)
    );
    assert_eq!(
        s.clickhouse,
        ClickHouse::Flags {
            url: None,
            file: None
        }
    );

    // Every key is there, each with a value its flag's parser accepts.
    let all = example_uncommented();
    let full = at(&all).unwrap_or_else(|p| panic!("{}\n{all}", lines(&p)));
    let shown = format!("{:?}", full.config);
    assert!(
        !shown.contains("None"),
        "a key is missing from the example: {shown}"
    );
    for key in KEYS {
        assert!(
            locate(&all, &[key]).is_some(),
            "{key} is not in the example"
        );
    }
    // The defaults it shows are the defaults.
    let c = &full.config;
    assert_eq!(c.ringbuf_size, Some(8 << 20));
    assert_eq!(c.log_level.as_deref(), Some(DEFAULT_LOG_LEVEL));
    assert_eq!(c.log_format, Some(LogFormat::default()));
    assert_eq!(c.cmdline, Some(CmdlineMode::default()));
    assert_eq!(c.json_keep, Some(events_file::DEFAULT_KEEP));
    assert_eq!(
        c.live_socket.as_deref(),
        Some(Path::new(crate::publish::live::DEFAULT_SOCKET))
    );
    let ch = c.clickhouse.as_ref().expect("clickhouse");
    assert_eq!(
        ch.spool_dir.as_deref(),
        Some(Path::new(crate::publish::store::config::DEFAULT_SPOOL_DIR))
    );
    let defaults = StoreConfig::new("http://127.0.0.1:8123").expect("defaults");
    assert_eq!(ch.batch_rows, Some(defaults.batch_rows));
    assert_eq!(ch.spool_max_bytes, Some(defaults.spool_max_bytes));
    assert_eq!(ch.database.as_deref(), Some(defaults.database.as_str()));
}

#[test]
fn the_readme_documents_every_key() {
    let readme = include_str!("../../../../README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("a Configuration section")
        .split("\n## ")
        .next()
        .unwrap_or("");
    for key in KEYS {
        assert!(
            section.contains(&format!("| `{key}`")),
            "README's Configuration table lacks `{key}`"
        );
    }
}

#[test]
fn each_bad_value_is_named_at_its_line_and_column() {
    let cases: &[(&str, &str)] = &[
        (
            "ringbuf_size: 65535\n",
            "config.yaml:1:15: ringbuf_size: 65535 is not a power of two",
        ),
        (
            "ringbuf_size: 1024\n",
            "config.yaml:1:15: ringbuf_size: 1024",
        ),
        (
            "ringbuf_size: lots\n",
            "config.yaml:1:15: ringbuf_size: `lots` is not a number",
        ),
        (
            "metrics: localhost:9464\n",
            "config.yaml:1:10: metrics: `localhost:9464` is not an address",
        ),
        (
            "json_max_size: 12Q\n",
            "config.yaml:1:16: json_max_size: `12Q` is not a size",
        ),
        (
            "json_keep: 0\n",
            "config.yaml:1:12: json_keep: `0` is not a number of files",
        ),
        (
            "log_level: loud\n",
            "config.yaml:1:12: log_level: `loud` is not a log level",
        ),
        (
            "log_format: xml\n",
            "config.yaml:1:13: log_format: `xml` is not one of text, json",
        ),
        (
            "cmdline: some\n",
            "config.yaml:1:10: cmdline: `some` is not one of redacted, argv0, full",
        ),
        (
            "registry: ''\n",
            "config.yaml:1:11: registry: the path is empty",
        ),
        ("user: \"\"\n", "config.yaml:1:7: user: `` is not a name"),
        (
            "json: [a, b]\n",
            "config.yaml:1:7: json: invalid type: sequence",
        ),
        (
            "ringbuf_size: 4096.5\n",
            "config.yaml:1:15: ringbuf_size: invalid type: floating point",
        ),
        (
            "dns_servers: [10.96.0.10, resolver.local]\n",
            "config.yaml:1:27: dns_servers",
        ),
        (
            "clickhouse: 3\n",
            "config.yaml:1:13: clickhouse: invalid type: integer",
        ),
        (
            "clickhouse:\n  batch_rows: many\n",
            "config.yaml:2:15: clickhouse.batch_rows: invalid type: string",
        ),
    ];
    for (text, want) in cases {
        let (got, want) = if text.starts_with("registry") {
            (errors(text), want.to_string())
        } else {
            // One line down: a registry line comes first.
            let want = want.replacen(":1:", ":2:", 1).replacen(
                ":2:15: clickhouse.",
                ":3:15: clickhouse.",
                1,
            );
            (errors(&format!("registry: r.yaml\n{text}")), want)
        };
        assert_eq!(got.len(), 1, "{text}: {got:?}");
        assert!(
            got[0].starts_with(&format!("/etc/nhiscope/{want}")),
            "{text}: {} does not start with {want}",
            got[0]
        );
    }
}

#[test]
fn unknown_keys_are_refused_with_their_name_and_place() {
    let got = errors("registry: r.yaml\nring_size: 4096\n");
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with(
            "/etc/nhiscope/config.yaml:2:1: unknown field `ring_size`, expected one of"
        ),
        "{}",
        got[0]
    );
    let got = errors("clickhouse:\n  url: http://ch:8123\n  pasword_file: /x\n");
    assert!(
        got[0]
            .starts_with("/etc/nhiscope/config.yaml:3:3: clickhouse: unknown field `pasword_file`"),
        "{}",
        got[0]
    );
}

#[test]
fn every_error_of_a_file_is_given_in_order() {
    let text = "\
# a comment
registry: r.yaml
ringbuf_size: 3
clickhouse:
  url: http://ch:8123
  colour: blue
metrics: nowhere
hostname: web-1
log_level: loud
";
    let got = errors(text);
    let places: Vec<&str> = got
        .iter()
        .map(|e| e.split(": ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        places,
        [
            "/etc/nhiscope/config.yaml:3:15",
            "/etc/nhiscope/config.yaml:6:3",
            "/etc/nhiscope/config.yaml:7:10",
            "/etc/nhiscope/config.yaml:9:12",
        ],
        "{got:#?}"
    );
    // A syntax error is given as it is, whatever the entries say.
    let got = errors("registry: r.yaml\nmetrics: [\n");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("/etc/nhiscope/config.yaml:"), "{got:?}");
    // A key given twice.
    let got = errors("registry: a\nregistry: b\n");
    assert!(got.iter().any(|e| e.contains("duplicate")), "{got:?}");
    // A flow mapping is read (one error at a time).
    let ok = at("{registry: r.yaml, ringbuf_size: 65536}").expect("flow style");
    assert_eq!(ok.config.ringbuf_size, Some(65536));
    assert_eq!(
        errors("{registry: r.yaml, ringbuf_size: 3, metrics: x}").len(),
        1
    );
}

#[test]
fn empty_files_and_nulls_set_nothing() {
    for text in ["", "\n", "# nothing yet\n", "---\n"] {
        let c = at(text).unwrap_or_else(|p| panic!("{text:?}: {}", lines(&p)));
        assert_eq!(c.config, DaemonConfig::default(), "{text:?}");
    }
    let c = at("registry: r\nmetrics: ~\njson:\nclickhouse: null\n").expect("nulls");
    assert_eq!(c.config.metrics, None);
    assert_eq!(c.config.json, None);
    assert_eq!(c.config.clickhouse, None);
    assert!(errors("- registry: r\n")[0].contains("invalid type: sequence"));
}

#[test]
fn flags_win_over_the_file_and_defaults_fill_the_rest() {
    let text = "\
registry: reg.yaml
json: events.jsonl
json_max_size: 1M
ringbuf_size: 65536
hostname: from-file
live_socket: /run/x.sock
metrics: 127.0.0.1:9464
log_level: debug
log_format: json
cmdline: argv0
user: nobody
";
    let s = resolved(text, &Flags::default()).expect("valid");
    // Relative paths are the file's directory's.
    assert_eq!(s.registry, Path::new("/etc/nhiscope/reg.yaml"));
    assert_eq!(s.json.as_deref(), Some("/etc/nhiscope/events.jsonl"));
    assert_eq!(
        s.json_rotation,
        Some(Rotation {
            max_bytes: 1 << 20,
            keep: events_file::DEFAULT_KEEP
        })
    );
    assert_eq!(s.ringbuf_size, Some(65536));
    assert_eq!(s.hostname.as_deref(), Some("from-file"));
    assert_eq!(s.live_socket, Path::new("/run/x.sock"));
    assert_eq!(s.metrics, Some(SocketAddr::from(([127, 0, 0, 1], 9464))));
    assert_eq!(s.log_level, "debug");
    assert_eq!(s.log_format, LogFormat::Json);
    assert_eq!(s.cmdline, CmdlineMode::Argv0);
    assert_eq!(s.user.as_deref(), Some("nobody"));

    let flags = Flags {
        registry: Some(PathBuf::from("flag.yaml")),
        json: Some("-".into()),
        json_max_size: None,
        ringbuf_size: Some(1 << 20),
        hostname: Some("from-flag".into()),
        log_level: Some("warn".into()),
        cmdline: Some(CmdlineMode::Full),
        ..Flags::default()
    };
    // `--json -` over a file that rotates by size: the file's json_max_size cannot apply.
    let e = resolved(text, &flags).unwrap_err();
    assert!(
        e[0].starts_with(
            "/etc/nhiscope/config.yaml:3:16: json_max_size: events go to standard output"
        ),
        "{e:?}"
    );
    let flags = Flags {
        json: Some("/tmp/e.jsonl".into()),
        json_keep: Some(3),
        ..flags
    };
    let s = resolved(text, &flags).expect("valid");
    assert_eq!(
        s.registry,
        Path::new("flag.yaml"),
        "a flag's path is the shell's"
    );
    assert_eq!(s.json.as_deref(), Some("/tmp/e.jsonl"));
    assert_eq!(
        s.json_rotation,
        Some(Rotation {
            max_bytes: 1 << 20,
            keep: 3
        })
    );
    assert_eq!(s.ringbuf_size, Some(1 << 20));
    assert_eq!(s.hostname.as_deref(), Some("from-flag"));
    assert_eq!(s.log_level, "warn");
    assert_eq!(s.cmdline, CmdlineMode::Full);
    assert_eq!(s.log_format, LogFormat::Json, "not given: the file's");

    // Nothing in the file: the defaults.
    let s = resolved("registry: /r.yaml\n", &Flags::default()).expect("valid");
    assert_eq!(s.json, None);
    assert_eq!(s.json_rotation, None);
    assert_eq!(s.ringbuf_size, None);
    assert_eq!(
        s.live_socket,
        Path::new(crate::publish::live::DEFAULT_SOCKET)
    );
    assert_eq!(s.metrics, None);
    assert_eq!(s.log_level, DEFAULT_LOG_LEVEL);
    assert_eq!(s.log_format, LogFormat::Text);
    assert_eq!(s.cmdline, CmdlineMode::Redacted);
    assert_eq!(s.user, None);
}

#[test]
fn what_spans_keys_is_checked_after_the_flags() {
    // No registry anywhere.
    let e = resolved("ringbuf_size: 65536\n", &Flags::default()).unwrap_err();
    assert_eq!(
        e,
        [
            "/etc/nhiscope/config.yaml: no `registry:` here and no --registry FILE: the daemon \
          needs a registry"
        ]
    );
    let e = Settings::resolve(None, &Flags::default()).unwrap_err();
    assert!(e[0].message.contains("--registry FILE is needed"), "{e:?}");
    // The flag gives it.
    let flags = Flags {
        registry: Some("/r.yaml".into()),
        ..Flags::default()
    };
    assert!(resolved("ringbuf_size: 65536\n", &flags).is_ok());

    // json_max_size without an events file, from the file or from the flag.
    let e = resolved("registry: r\njson_max_size: 1M\n", &Flags::default()).unwrap_err();
    assert!(
        e[0].starts_with("/etc/nhiscope/config.yaml:2:16: json_max_size: needs an events file"),
        "{e:?}"
    );
    let e = Settings::resolve(
        None,
        &Flags {
            json_max_size: Some(1 << 20),
            ..flags.clone()
        },
    )
    .unwrap_err();
    assert!(e[0].message.starts_with("--json-max-size: needs"), "{e:?}");
    // The file gives the events file, the flag the size: fine.
    let s = resolved(
        "registry: r\njson: /e.jsonl\n",
        &Flags {
            json_max_size: Some(1 << 20),
            ..Flags::default()
        },
    )
    .expect("valid");
    assert_eq!(s.json_rotation.map(|r| r.max_bytes), Some(1 << 20));
    // json_keep without json_max_size.
    let e = resolved("registry: r\njson: /e\njson_keep: 3\n", &Flags::default()).unwrap_err();
    assert!(
        e[0].starts_with("/etc/nhiscope/config.yaml:3:12: json_keep: needs --json-max-size"),
        "{e:?}"
    );
    let e = Settings::resolve(
        None,
        &Flags {
            json: Some("/e".into()),
            json_keep: Some(3),
            ..flags
        },
    )
    .unwrap_err();
    assert!(
        e[0].message
            .starts_with("--json-keep: needs --json-max-size"),
        "{e:?}"
    );
}

#[test]
fn the_clickhouse_section_is_the_store_config_and_its_errors_are_placed() {
    let dir = std::env::temp_dir().join(format!("nhiscope-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pw = dir.join("pw");
    std::fs::write(&pw, "s3cret-Canary\n").expect("pw");
    let file = dir.join("config.yaml");
    let load = |text: &str, flags: &Flags| {
        let f = parse(text, &file).unwrap_or_else(|p| panic!("{}", lines(&p)));
        let s = Settings::resolve(Some(&f), flags).unwrap_or_else(|p| panic!("{}", lines(&p)));
        s.clickhouse
            .store_config(&|_| None)
            .map_err(|p| p.iter().map(ToString::to_string).collect::<Vec<_>>())
    };
    let text = "registry: r\nclickhouse:\n  url: http://ch.example:8123\n  password_file: pw\n  \
                batch_interval: 2s\n  spool_dir: spool\n";
    let c = load(text, &Flags::default()).expect("valid").expect("on");
    assert_eq!(c.url, "http://ch.example:8123");
    assert_eq!(
        c.password.as_ref().map(|p| p.expose()),
        Some("s3cret-Canary")
    );
    assert_eq!(c.batch_interval, std::time::Duration::from_secs(2));
    assert_eq!(
        c.spool_dir,
        dir.join("spool"),
        "relative to the config file"
    );
    // --clickhouse URL wins over url:.
    let flags = Flags {
        clickhouse_url: Some("https://other:8443".into()),
        ..Flags::default()
    };
    let c = load(text, &flags).expect("valid").expect("on");
    assert_eq!(c.url, "https://other:8443");
    assert_eq!(
        c.password.as_ref().map(|p| p.expose()),
        Some("s3cret-Canary")
    );
    // --clickhouse-config replaces the section.
    let other = dir.join("clickhouse.yaml");
    std::fs::write(&other, "url: http://third:8123\n").expect("write");
    let flags = Flags {
        clickhouse_config: Some(other),
        ..Flags::default()
    };
    let c = load(text, &flags).expect("valid").expect("on");
    assert_eq!(c.url, "http://third:8123");
    assert_eq!(c.password, None);
    // No section: off.
    assert!(load("registry: r\n", &Flags::default())
        .expect("valid")
        .is_none());

    let f = file.display().to_string();
    let bad: &[(&str, String)] = &[
        ("  url: ftp://ch:21\n", format!("{f}:3:8: clickhouse.url ftp://ch:21: scheme `ftp`")),
        (
            "  url: http://ch:8123\n  password_file: missing\n",
            format!("{f}:4:18: clickhouse.password_file {}: cannot read", dir.join("missing").display()),
        ),
        ("  url: http://ch:8123\n  batch_rows: 0\n", format!("{f}:4:15: clickhouse: batch_rows must be at least 1")),
        ("  url: http://ch:8123\n  database: a-b\n", format!("{f}:4:13: clickhouse: database `a-b`")),
        ("  url: http://ch:8123\n  batch_interval: soon\n", format!("{f}:4:19: batch_interval: `soon` is not a duration")),
        ("  url: http://ch:8123\n  ca_file: /ca.pem\n", format!("{f}:2:1: clickhouse: ca_file, client_cert_file and client_key_file are for an https:// URL")),
        ("  database: x\n", format!("{f}:2:1: clickhouse: no `url:` and no --clickhouse URL")),
        (
            "  url: https://ch:8443\n  ca_file: nope.pem\n",
            format!("{f}:4:12: clickhouse.ca_file {}", dir.join("nope.pem").display()),
        ),
    ];
    for (section, want) in bad {
        let e = load(
            &format!("registry: r\nclickhouse:\n{section}"),
            &Flags::default(),
        )
        .expect_err(section);
        assert!(
            e[0].starts_with(want.as_str()),
            "{section}: {e:?}\nwant {want}"
        );
        assert!(!e[0].contains("s3cret-Canary"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keys_are_located_in_block_style() {
    let text = "# c\nregistry: r\njson_keep: 3\njson:   /e # here\nclickhouse:\n  # inner\n  url: http://x\n  \
                spool_dir:\n    /s\nmetrics: 1.2.3.4:5\n";
    assert_eq!(locate(text, &["registry"]), Some((2, 11)));
    assert_eq!(locate(text, &["json"]), Some((4, 9)), "not json_keep");
    assert_eq!(locate(text, &["clickhouse"]), Some((5, 1)));
    assert_eq!(locate(text, &["clickhouse", "url"]), Some((7, 8)));
    assert_eq!(locate(text, &["clickhouse", "spool_dir"]), Some((8, 3)));
    assert_eq!(
        locate(text, &["clickhouse", "cluster"]),
        Some((5, 1)),
        "the parent"
    );
    assert_eq!(locate(text, &["metrics"]), Some((10, 10)));
    assert_eq!(locate(text, &["url"]), None, "not a top-level key");
    assert_eq!(locate("{registry: r}", &["registry"]), None);
}

#[test]
fn a_reload_says_what_changed_and_what_needs_a_restart() {
    let base = "registry: /r1.yaml\nringbuf_size: 65536\nlog_level: info\ncmdline: redacted\n";
    let old = resolved(base, &Flags::default()).expect("valid");
    assert_eq!(changes(&old, &old), Changes::default());
    let new = resolved(
        "registry: /r2.yaml\nringbuf_size: 131072\nlog_level: debug\ncmdline: argv0\n\
         metrics: 127.0.0.1:9464\nclickhouse:\n  url: http://ch:8123\n",
        &Flags::default(),
    )
    .expect("valid");
    assert_eq!(
        changes(&old, &new),
        Changes {
            live: vec!["registry", "log_level", "cmdline"],
            restart: vec!["ringbuf_size", "metrics", "clickhouse"],
        }
    );
    // The same settings written elsewhere in the file are no change.
    let moved = resolved(
        "# moved around\ncmdline: redacted\nlog_level: info\nringbuf_size: 65536\nregistry: /r1.yaml\n",
        &Flags::default(),
    )
    .expect("valid");
    assert_eq!(changes(&old, &moved), Changes::default());
    // A flag given at start still wins at a reload: the file's change is no change.
    let flags = Flags {
        ringbuf_size: Some(65536),
        ..Flags::default()
    };
    let a = resolved(base, &flags).expect("valid");
    let b = resolved(&base.replace("65536", "262144"), &flags).expect("valid");
    assert_eq!(changes(&a, &b), Changes::default());
    for (key, text) in [
        ("json", "json: /e\n"),
        ("hostname", "hostname: h\n"),
        ("live_socket", "live_socket: /s.sock\n"),
        ("log_format", "log_format: json\n"),
        ("user", "user: nobody\n"),
    ] {
        let new = resolved(&format!("{base}{text}"), &Flags::default()).expect("valid");
        assert_eq!(changes(&old, &new).restart, [key]);
    }
}

#[test]
fn config_check_loads_what_the_file_names() {
    let dir = std::env::temp_dir().join(format!("nhiscope-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("config.yaml");
    std::fs::write(
        dir.join("reg.yaml"),
        "nhis:\n  - id: a\n    credentials: [/etc/a]\n",
    )
    .expect("registry");
    std::fs::write(
        &file,
        "registry: reg.yaml\njson: /var/log/e.jsonl\nmetrics: 127.0.0.1:9464\n",
    )
    .expect("config");
    let summary = check(&file, &|_| None).unwrap_or_else(|p| panic!("{}", lines(&p)));
    assert_eq!(
        summary,
        format!(
            "{}: ok: registry {} (1 NHIs), events /var/log/e.jsonl, ClickHouse off, metrics \
             127.0.0.1:9464, user root",
            file.display(),
            dir.join("reg.yaml").display()
        )
    );
    // Every problem: a registry that does not load, a bad ClickHouse section, a missing user.
    std::fs::write(
        dir.join("bad-reg.yaml"),
        "nhis:\n  - id: a\n    colour: red\n",
    )
    .expect("w");
    std::fs::write(
        &file,
        "registry: bad-reg.yaml\nuser: no-such-user-here\nclickhouse:\n  url: http://u:p@ch:8123\n",
    )
    .expect("config");
    let e: Vec<String> = check(&file, &|_| None)
        .expect_err("invalid")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(
        e[0].starts_with(&format!("{}:3:5: ", dir.join("bad-reg.yaml").display())),
        "{e:?}"
    );
    assert!(
        e[1].starts_with(&format!("{}:4:8: clickhouse.url", file.display())),
        "{e:?}"
    );
    assert!(
        !e[1].contains("u:p"),
        "the URL's credentials are not echoed: {e:?}"
    );
    assert!(
        e[2].starts_with(&format!("{}:2:7: user: ", file.display())),
        "{e:?}"
    );
    std::fs::write(&file, "registry: none.yaml\n").expect("config");
    let e = check(&file, &|_| None).expect_err("no registry file");
    assert!(
        e[0].to_string()
            .starts_with(&format!("{}:1:11: registry: ", file.display())),
        "{e:?}"
    );
    let e = check(&dir.join("absent.yaml"), &|_| None).expect_err("no file");
    assert!(
        e[0].to_string().contains("cannot read the config file"),
        "{e:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Found by the `daemon_config` fuzz target: an entry cut short at the end of the input made
/// libyaml place its error on the line after the last one.
#[test]
fn an_error_at_the_end_of_the_input_is_placed_inside_it() {
    let input: &[u8] =
        b"registry: r.yaml\nring: 1\nclickhouse:\n  url: ftphttps://ch.example:8443\n  passwor";
    let text = std::str::from_utf8(input).expect("utf8");
    let problems = at(text).expect_err("invalid");
    for p in &problems {
        let (line, column) = p.at.expect("placed");
        assert!(line <= 5, "{p}");
        if line == 5 {
            assert!(column <= "  passwor".len() + 1, "{p}");
        }
    }
    assert!(
        problems.iter().any(|p| p.to_string().contains(":5:10: ")),
        "{problems:#?}"
    );
}
