use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use super::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ok(text: &str) -> Registry {
    parse(text, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    parse(text, "test.yaml").unwrap_err().to_string()
}

const DESIGN_EXAMPLE: &str = r#"
nhis:
  - id: billing-s3-writer             # unique; letters, digits, . _ -
    owner: team-billing               # optional, free text
    credentials:                      # files holding this NHI's secret: exact paths or globs (*, **, ?)
      - /etc/billing/aws-credentials
    readers:                          # who may open those files; omitted: any reader is fine
      exe: [/usr/local/bin/billing-worker, /usr/bin/python3*]
      uid: [1001]
    holders:                          # processes that carry the NHI without reading a file
      exe: [/opt/billing/bin/uploader]  # (a secret injected through the environment); optional
    endpoints:                        # where a holder may connect; omitted: connections not checked
      - host: "*.s3.eu-west-1.amazonaws.com"
        port: 443
      - cidr: 10.20.0.0/16
        ports: [5432, 6432]
    expires: 2026-12-31T00:00:00Z     # optional: any use after this instant is drift
    max_age: 24h                      # optional: a credential file older than this when read is drift
    interactive: deny                 # default deny: use from a human's terminal session is drift
watch:                                # extra credential patterns to discover unregistered NHIs,
  - /srv/**/secrets/*.json            # added to the built-in list (~/.aws/credentials, kubeconfig, .env, ...)
"#;

#[test]
fn the_design_example_parses() {
    let r = ok(DESIGN_EXAMPLE);
    assert_eq!(r.nhis.len(), 1);
    let n = &r.nhis[0];
    assert_eq!(n.id, "billing-s3-writer");
    assert_eq!(n.owner.as_deref(), Some("team-billing"));
    assert_eq!(
        n.credentials,
        [Glob::parse("/etc/billing/aws-credentials").unwrap()]
    );
    let readers = n.readers.as_ref().unwrap();
    assert_eq!(readers.uid, [1001]);
    assert!(readers.allows("/usr/bin/python3.12", 1001));
    assert!(!readers.allows("/usr/bin/python3.12", 0));
    assert!(!readers.allows("/usr/bin/curl", 1001));
    assert!(n
        .holders
        .as_ref()
        .unwrap()
        .allows("/opt/billing/bin/uploader", 0));
    let eps = n.endpoints.as_ref().unwrap();
    assert!(eps[0].allows(
        "52.1.2.3".parse().unwrap(),
        443,
        &["b.s3.eu-west-1.amazonaws.com"]
    ));
    assert!(!eps[0].allows(
        "52.1.2.3".parse().unwrap(),
        80,
        &["b.s3.eu-west-1.amazonaws.com"]
    ));
    assert!(!eps[0].allows("52.1.2.3".parse().unwrap(), 443, &[] as &[&str]));
    assert!(eps[1].allows("10.20.3.4".parse().unwrap(), 6432, &[] as &[&str]));
    assert!(!eps[1].allows("10.20.3.4".parse().unwrap(), 5433, &[] as &[&str]));
    let expires = n
        .expires
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(expires, 1_798_675_200);
    assert_eq!(n.max_age, Some(Duration::from_secs(86_400)));
    assert_eq!(n.interactive, Interactive::Deny);
    assert_eq!(r.watch, [Glob::parse("/srv/**/secrets/*.json").unwrap()]);
}

#[test]
fn the_shipped_example_loads_and_compiles() {
    let r = load(&root().join("examples/registry.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert!((3..=6).contains(&r.nhis.len()));
    assert!(r.nhis.iter().any(|n| n.holders.is_some()));
    let plan = r.filter_plan(7).unwrap();
    assert!(plan.may_match(b"/etc/nhiscope-example/billing/aws-credentials"));
    assert!(!plan.parent_scan && !plan.ancestor_scan, "{:?}", plan.keys);
    for unwatched in [
        "/etc/passwd",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/proc/self/stat",
    ] {
        assert!(!plan.may_match(unwatched.as_bytes()), "{unwatched}");
    }
    let owner = r
        .owner_of("/etc/nhiscope-example/orders/db-client/client.pem")
        .map(|n| n.id.as_str());
    assert_eq!(owner, Some("orders-db"));
    assert_eq!(
        r.owner_of("/home/ann/.aws/credentials")
            .map(|n| n.id.as_str()),
        Some("ops-aws-oncall")
    );
}

#[test]
fn empty_registries_are_valid() {
    for text in [
        "",
        "\n",
        "# nothing yet\n",
        "nhis: []",
        "nhis: []\nwatch: []\n",
        "{}",
        "nhis:\n",
    ] {
        assert_eq!(ok(text), Registry::default(), "{text:?}");
    }
}

#[test]
fn defaults_and_other_forms() {
    let r = ok("nhis:\n  - id: a.b_c-9\n    credentials: ['~/.config/app/token']\n    expires: 2027-01-01\n");
    let n = &r.nhis[0];
    assert_eq!(n.interactive, Interactive::Deny);
    assert!(
        n.readers.is_none() && n.holders.is_none() && n.endpoints.is_none() && n.max_age.is_none()
    );
    assert_eq!(
        n.expires
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        1_798_761_600
    );
    let r = ok("nhis:\n  - id: env-only\n    holders: {uid: [0]}\n    interactive: allow\n");
    assert!(r.nhis[0].credentials.is_empty());
    assert_eq!(r.nhis[0].interactive, Interactive::Allow);
}

#[test]
fn instants_with_offsets() {
    let at = |s: &str| {
        parse_instant(s)
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let z = at("2026-12-31T00:00:00Z");
    assert_eq!(at("2026-12-31T01:00:00+01:00"), z);
    assert_eq!(at("2026-12-30T19:30:00-04:30"), z);
    assert_eq!(at("2026-12-31"), z);
    assert_eq!(at("2026-12-31T00:00:00"), z);
    for bad in [
        "tomorrow",
        "2026-13-01",
        "2026-12-31T00:00:00+1:00",
        "2026-12-31T00:00:00+xx:00",
        "2026-12-31T00:00:00+24:00",
        "2026-12-31T00:00:00+01:60",
        "+01:00",
    ] {
        assert!(parse_instant(bad).is_err(), "{bad}");
    }
}

#[test]
fn instants_the_daemon_cannot_write_are_refused_with_their_place() {
    // Valid local times that an offset carries past year 9999 or before 1970.
    for bad in [
        "9999-12-31T23:59:59-23:00",
        "9999-12-31T23:00:00-01:00",
        "1970-01-01T00:00:00+01:00",
    ] {
        let e = parse_instant(bad).expect_err(bad);
        assert!(e.contains("out of range"), "{e}");
        let e = err(&format!(
            "nhis:\n  - id: a\n    credentials: [/etc/a]\n    expires: {bad}\n"
        ));
        assert!(e.contains("test.yaml:4:"), "{e}");
    }
    // The edges that fit are kept, and can be written.
    for ok in [
        "9999-12-31T23:59:59Z",
        "9999-12-31T22:59:59-01:00",
        "1970-01-01T01:00:00+01:00",
    ] {
        let t = parse_instant(ok).expect(ok);
        let _ = humantime::format_rfc3339_seconds(t).to_string();
    }
}

/// Each fixture's first line states the error it must produce; the table repeats it so that a
/// changed fixture cannot silently change the expectation.
#[test]
fn fixtures_fail_at_the_stated_position() {
    let cases = [
        (
            "bad-glob.yaml",
            6,
            9,
            "nhis[0].credentials[1]: `etc/app/token` is not absolute",
        ),
        (
            "unknown-key.yaml",
            5,
            5,
            "unknown field `reader`, expected one of `id`, `owner`",
        ),
        (
            "dup-id.yaml",
            7,
            9,
            "nhis[2].id: duplicate NHI id `app`: nhis[0] has it already",
        ),
        (
            "dup-credential.yaml",
            8,
            9,
            "credential `/etc/app/token` is already claimed by NHI `app` (nhis[0])",
        ),
        ("bad-cidr.yaml", 8, 15, "did you mean `10.20.0.0/16`?"),
        (
            "bad-duration.yaml",
            5,
            14,
            "nhis[0].max_age: `24 hourz` is not a duration",
        ),
        ("bad-yaml.yaml", 5, 7, "did not find expected ',' or ']'"),
    ];
    let dir = root().join("tests/fixtures/registry");
    for (name, line, column, want) in cases {
        let path = dir.join(name);
        let e = load(&path).unwrap_err();
        let (got_line, got_column) = match &e {
            RegistryError::Invalid { line, column, .. } => (*line, *column),
            other => panic!("{name}: no position: {other}"),
        };
        let shown = e.to_string();
        assert_eq!((got_line, got_column), (line, column), "{name}: {shown}");
        assert!(
            shown.starts_with(&format!("{}:{line}:{column}: ", path.display())),
            "{shown}"
        );
        assert!(shown.contains(want), "{name}: {shown}");
        let text = std::fs::read_to_string(&path).unwrap();
        let stated = format!("# expect: {name}:{line}:{column}: ");
        assert!(
            text.starts_with(&stated),
            "{name}: line 1 must start with {stated:?}"
        );
    }
}

#[test]
fn inline_errors_name_the_place() {
    let nhi = |body: &str| format!("nhis:\n  - id: app\n    credentials: [/etc/app/token]\n{body}");
    let cases: Vec<(String, usize, usize, &str)> = vec![
        (
            "nhis:\n  - id: 'a b'\n".into(),
            2,
            9,
            "`a b` is not an NHI id",
        ),
        (
            format!("nhis:\n  - id: {}\n", "x".repeat(65)),
            2,
            9,
            "is not an NHI id",
        ),
        (
            "nhis:\n  - owner: x\n    credentials: [/a/b]\n".into(),
            2,
            5,
            "missing field `id`",
        ),
        (
            "nhis:\n  - id: lonely\n    owner: x\n".into(),
            2,
            5,
            "NHI `lonely` has neither `credentials` nor `holders`",
        ),
        (
            nhi("    readers: {}\n"),
            4,
            14,
            "nhis[0].readers: give `exe`, `uid`, `cgroup` or `container`",
        ),
        (
            nhi("    readers:\n      exe: [bin/x]\n"),
            5,
            13,
            "`bin/x` is not absolute",
        ),
        (
            nhi("    readers:\n      uid: [-1]\n"),
            5,
            13,
            "readers.uid[0]: invalid type: integer `-1`",
        ),
        (
            nhi("    endpoints:\n      - port: 443\n"),
            5,
            9,
            "exactly one of `host` and `cidr`",
        ),
        (
            nhi("    endpoints:\n      - {host: a.com, cidr: 10.0.0.0/8}\n"),
            5,
            9,
            "exactly one of",
        ),
        (
            nhi("    endpoints:\n      - {host: a.com, methods: [get]}\n"),
            5,
            9,
            "method `get` is not an HTTP method",
        ),
        (
            nhi("    endpoints:\n      - cidr: 10.0.0.0/8\n        sni: ['a b']\n"),
            6,
            15,
            "a b",
        ),
        (
            nhi("    endpoints:\n      - cidr: 10.0.0.0/8\n        paths: [v1/x]\n"),
            6,
            17,
            "v1/x",
        ),
        (
            nhi("    endpoints:\n      - {host: a.com, port: 1, ports: [2]}\n"),
            5,
            9,
            "`port` or `ports`, not both",
        ),
        (
            nhi("    endpoints:\n      - {host: a.com, port: 0}\n"),
            5,
            9,
            "port 0",
        ),
        (
            nhi("    endpoints:\n      - {host: a.com, port: 70000}\n"),
            5,
            29,
            "invalid value",
        ),
        (
            nhi("    endpoints:\n      - host: 'a/b.com'\n"),
            5,
            15,
            "`/` is not allowed",
        ),
        (
            nhi("    endpoints:\n      - cidr: 10.0.0.0/33\n"),
            5,
            15,
            "prefix length 33",
        ),
        (
            nhi("    interactive: maybe\n"),
            4,
            18,
            "unknown variant `maybe`, expected `deny` or `allow`",
        ),
        (
            nhi("    expires: soon\n"),
            4,
            14,
            "`soon` is not an instant",
        ),
        (nhi("    max_age: 0s\n"), 4, 14, "longer than zero"),
        (
            nhi("    credentials: [/x]\n"),
            2,
            5,
            "nhis[0]: duplicate field `credentials`",
        ),
        (
            "nhis:\n  - id: a\n    credentials: [/x/y, /x/y]\n".into(),
            3,
            25,
            "credential `/x/y` is listed twice",
        ),
        (
            "nhis:\n  - id: a\n    credentials: ['/*/x*']\n".into(),
            3,
            19,
            "`/*/x*` cannot",
        ),
        (
            "nhis:\n  - id: a\n    credentials: ['/**/*']\n".into(),
            3,
            19,
            "cannot be filtered in the kernel",
        ),
        (
            "watch:\n  - /etc/x\n  - '~/**'\n".into(),
            3,
            5,
            "watch[1]: `~/**` cannot be filtered",
        ),
        ("watch: ['/a/[bc]']\n".into(), 1, 9, "character classes"),
        (
            "nhi: []\n".into(),
            1,
            1,
            "unknown field `nhi`, expected `nhis` or `watch`",
        ),
        ("nhis: {}\n".into(), 1, 7, "expected a list of NHIs"),
        ("- a\n".into(), 1, 1, "invalid type: sequence"),
    ];
    for (text, line, column, want) in cases {
        let e = err(&text);
        assert!(
            e.starts_with(&format!("test.yaml:{line}:{column}: ")),
            "{text:?}: {e}"
        );
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn checks_do_not_leak_between_parses() {
    let text = "nhis:\n  - id: a\n    credentials: [/x/y]\n";
    ok(text);
    ok(text);
    assert!(
        err("nhis:\n  - id: a\n    credentials: [/x/y]\n  - id: a\n    holders: {uid: [1]}\n")
            .contains("duplicate NHI id")
    );
    ok(text);
    // Outside parse() no cross-NHI state exists, and nothing panics.
    let r: Registry = serde_norway::from_str(text).unwrap();
    assert_eq!(r.nhis.len(), 1);
}

/// Every fixture, including ones added later, fails exactly as its first line says.
#[test]
fn every_fixture_states_its_error() {
    let dir = root().join("tests/fixtures/registry");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let stated = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# expect: ")
            .unwrap();
        let (place, message) = stated.split_once(": ").unwrap();
        let shown = load(&path).unwrap_err().to_string();
        let shown = shown.strip_prefix(&format!("{}/", dir.display())).unwrap();
        assert!(shown.starts_with(&format!("{place}: ")), "{shown}");
        assert!(shown.contains(message), "{shown}");
        seen += 1;
    }
    assert!(seen >= 7);
}

#[test]
fn unreadable_files_say_why() {
    let e = load(Path::new("/nonexistent/nhiscope/registry.yaml"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "/nonexistent/nhiscope/registry.yaml: cannot read registry: No such file or directory"
    );
}

#[test]
fn ownership_and_watching() {
    let r = ok(concat!(
        "nhis:\n",
        "  - id: first\n    credentials: ['/etc/app/*.key']\n",
        "  - id: second\n    credentials: [/etc/app/main.key, /etc/second/token]\n",
        "watch: ['/srv/**/secrets/*.json']\n",
    ));
    assert_eq!(
        r.owner_of("/etc/app/main.key").map(|n| n.id.as_str()),
        Some("first")
    );
    assert_eq!(
        r.owner_of("/etc/second/token").map(|n| n.id.as_str()),
        Some("second")
    );
    assert!(r.owner_of("/srv/a/secrets/x.json").is_none());
    assert!(r.nhi("second").is_some() && r.nhi("third").is_none());
    for watched in [
        "/etc/app/x.key",
        "/srv/a/secrets/x.json",
        "/root/.aws/credentials",
        "/app/.env",
    ] {
        assert!(r.is_watched(watched), "{watched}");
    }
    for not in [
        "/etc/app/x.pem",
        "/srv/a/x.json",
        "/etc/passwd",
        "/home/ann/.ssh/id_rsa.pub",
    ] {
        assert!(!r.is_watched(not), "{not}");
    }
    let all = r.all_patterns();
    assert_eq!(all.len(), 3 + 1 + watchlist::builtin().len());
    assert_eq!(all[0].as_str(), "/etc/app/*.key");
    let plan = filter::compile(7, all).unwrap();
    assert!(plan.may_match(b"/etc/second/token") && plan.may_match(b"/srv/b/secrets/db.json"));
}

#[test]
fn endpoints_declare_apis_by_server_name_method_and_path() {
    let reg = parse(
        "nhis:\n  - id: a\n    credentials: [/x]\n    endpoints:\n      - cidr: 10.0.0.0/8\n        sni: ['*.api.test']\n        methods: [GET, POST]\n        paths: ['/v1/*']\n      - host: db.test\n",
        "r.yaml",
    )
    .expect("registry");
    let eps = reg.nhis[0].endpoints.as_ref().expect("endpoints");
    let e = &eps[0];
    use crate::domain::wire::Readout::{Http, Other, Tls, Unreadable};
    assert!(e.allows_api(Some("x.api.test"), Some("GET"), Some("/v1/items"), Http));
    assert!(
        e.allows_api(Some("x.api.test"), None, None, Tls),
        "TLS: no method or path to see"
    );
    // What the endpoint declares, the request must show.
    assert!(!e.allows_api(None, None, None, Tls), "no server name");
    assert!(
        !e.allows_api(Some("x.api.test"), None, None, Http),
        "no method"
    );
    assert!(
        !e.allows_api(Some("x.api.test"), Some("GET"), None, Http),
        "no path"
    );
    assert!(!e.allows_api(None, None, None, Unreadable));
    assert!(!e.allows_api(None, None, None, Other));
    assert!(!e.allows_api(Some("other.test"), None, None, Tls));
    assert!(!e.allows_api(Some("x.api.test"), Some("DELETE"), Some("/v1/items"), Http));
    assert!(!e.allows_api(Some("x.api.test"), Some("GET"), Some("/v2/items"), Http));
    // The root is a path a registry can name.
    let root = parse(
        "nhis:\n  - id: a\n    credentials: [/x]\n    endpoints:\n      - cidr: 10.0.0.0/8\n        paths: ['/', '/health/']\n",
        "r.yaml",
    )
    .expect("registry");
    let e = &root.nhis[0].endpoints.as_ref().expect("endpoints")[0];
    assert!(e.allows_api(None, Some("GET"), Some("/"), Http));
    assert!(e.allows_api(None, Some("GET"), Some("/health/"), Http));
    assert!(!e.allows_api(None, Some("GET"), Some("/health"), Http));
    // Without `sni`, a `host` entry's glob is matched against the name on the wire too, and
    // TLS or HTTP must name the server; another protocol need not.
    assert!(eps[1].allows_api(Some("db.test"), None, None, Tls));
    assert!(!eps[1].allows_api(Some("other.test"), None, None, Tls));
    assert!(!eps[1].allows_api(None, None, None, Tls));
    assert!(!eps[1].allows_api(None, None, None, Unreadable));
    assert!(eps[1].allows_api(None, None, None, Other));
}

#[test]
fn the_owner_found_through_the_index_is_the_first_nhi_whose_pattern_matches() {
    // Literal paths, wildcards in the name and in a directory, `**` anywhere, home
    // directories, patterns of several NHIs under one directory, in every order.
    let patterns = [
        "/etc/app/token",
        "/etc/app/*.key",
        "/etc/*/token",
        "/etc/app/**",
        "/**/.env",
        "~/.aws/credentials",
        "~/.config/*/auth.json",
        "/srv/a/b/c.pem",
        "/srv/**/c.pem",
        "/srv/a/?/c.pem",
        "/etc/app/t*",
    ];
    let paths = [
        "/etc/app/token",
        "/etc/app/main.key",
        "/etc/other/token",
        "/etc/app/x/y",
        "/srv/a/b/c.pem",
        "/srv/a/bb/c.pem",
        "/srv/.env",
        "/.env",
        "/root/.aws/credentials",
        "/home/ann/.aws/credentials",
        "/home/ann/.config/gh/auth.json",
        "/etc",
        "/x",
        "/",
        "relative/etc/app/token",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut tried = 0;
    for _ in 0..300 {
        let mut yaml = String::from("nhis:\n");
        // Distinct patterns (two NHIs may not claim one), one or two to an NHI, in a drawn
        // order.
        let mut order: Vec<&str> = patterns.to_vec();
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut next = order.into_iter();
        for n in 0..4 {
            let two = (x >> n) & 1 == 1;
            let list: Vec<String> = next
                .by_ref()
                .take(if two { 2 } else { 1 })
                .map(|p| format!("'{p}'"))
                .collect();
            yaml += &format!("  - id: n{n}\n    credentials: [{}]\n", list.join(", "));
        }
        // Two NHIs may not claim one pattern: such a draw is not a registry.
        let Ok(r) = parse(&yaml, "test.yaml") else {
            continue;
        };
        tried += 1;
        for p in paths {
            let want = r
                .nhis
                .iter()
                .position(|n| n.credentials.iter().any(|g| g.matches(p)));
            assert_eq!(r.owner_at(p).map(|(i, _)| i), want, "{p} in\n{yaml}");
        }
    }
    assert!(tried > 50, "{tried} registries tried");
}

#[test]
fn the_holder_candidates_leave_out_only_nhis_whose_exe_list_cannot_admit() {
    // Literal and wildcard `exe` lists, empty ones (uid only), one executable listed by
    // several NHIs, a script named by an interpreter's process.
    let lists = [
        "exe: [/usr/bin/curl]",
        "exe: [/usr/bin/curl, /opt/a/run]",
        "exe: [/usr/bin/python3*]",
        "exe: [/opt/a/run]",
        "exe: [/opt/a/sync.py]",
        "exe: ['/opt/**']",
        "uid: [1000]",
        "exe: [/opt/a/run, /usr/bin/python3*]",
    ];
    let runs = [
        ("/usr/bin/curl", None),
        ("/opt/a/run", None),
        ("/usr/bin/python3.12", Some("/opt/a/sync.py")),
        ("/usr/bin/python3", Some("/opt/a/run")),
        ("/bin/sh", None),
        ("/opt/b/x", Some("/usr/bin/curl")),
    ];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut room = Vec::new();
    for _ in 0..200 {
        let mut yaml = String::from("nhis:\n");
        for n in 0..6 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            yaml += &format!("  - id: n{n}\n    credentials: [/etc/n{n}/token]\n");
            if !x.is_multiple_of(5) {
                yaml += &format!(
                    "    holders: {{{}}}\n",
                    lists[(x >> 8) as usize % lists.len()]
                );
            }
        }
        let r = parse(&yaml, "test.yaml").expect("a registry");
        for (exe, script) in runs {
            for uid in [0, 1000] {
                let admitted = |i: &usize| {
                    r.nhis[*i]
                        .holders
                        .as_ref()
                        .is_some_and(|h| h.admits(exe, script, uid, Placement::default()))
                };
                let want: Vec<usize> = (0..r.nhis.len()).filter(admitted).collect();
                r.holder_candidates(exe, script, &mut room);
                assert!(room.windows(2).all(|w| w[0] < w[1]), "{room:?}");
                // Narrowed: an NHI whose `exe` list is all literal and names neither the
                // executable nor the script is not a candidate.
                for (i, n) in r.nhis.iter().enumerate() {
                    let Some(h) = &n.holders else { continue };
                    let literal = !h.exe.is_empty() && h.exe.iter().all(Glob::is_literal);
                    let named = h
                        .exe
                        .iter()
                        .any(|g| g.as_str() == exe || script.is_some_and(|s| g.as_str() == s));
                    if literal && !named {
                        assert!(!room.contains(&i), "n{i} for {exe} in\n{yaml}");
                    }
                }
                let got: Vec<usize> = room.iter().copied().filter(admitted).collect();
                assert_eq!(got, want, "{exe} {script:?} uid {uid} in\n{yaml}");
            }
        }
    }
}

#[test]
fn the_path_memo_says_what_the_registry_says_and_stays_bounded() {
    let r = parse(
        "nhis:\n  - id: a\n    credentials: [/etc/app/token, '/etc/app/*.pem']\n  - id: b\n    credentials: ['~/.config/b/*.json']\nwatch: ['/srv/**/secrets/*.json']\n",
        "test.yaml",
    )
    .expect("a registry");
    let long = format!("/srv/{}/secrets/x.json", "d/".repeat(200));
    let paths = [
        "/etc/app/token",
        "/etc/app/k.pem",
        "/home/ann/.config/b/c.json",
        "/srv/x/secrets/y.json",
        "/root/.aws/credentials",
        "/etc/app/other",
        "/tmp/token",
        long.as_str(),
    ];
    let mut memo = PathMemo::default();
    for round in 0..3 {
        for p in paths {
            let owner = r.owner_at(p).map(|(i, _)| i);
            let want = PathSaid {
                owner,
                watched: r.is_watched(p),
            };
            assert_eq!(memo.said(&r, p), want, "{p}, round {round}");
        }
    }
    // Every path is kept, watched or not, but not a long one.
    assert_eq!(memo.len(), paths.len() - 1);
    for i in 0..3 * PATH_MEMO_CAP {
        let p = format!("/srv/{i}/secrets/k.json");
        assert!(memo.said(&r, &p).watched);
        assert!(memo.len() <= PATH_MEMO_CAP);
    }
    assert_eq!(memo.said(&r, "/etc/app/token").owner, Some(0));
    memo.clear();
    assert!(memo.is_empty());
}
