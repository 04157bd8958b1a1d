use super::*;
use crate::domain::registry;
use crate::domain::wire::Readout::{Http, Tls};
use crate::domain::wire::WireFields;

fn rec(
    kind: Kind,
    exe: &str,
    uid: u32,
    path: &str,
    dest: (&str, u16, &[&str]),
    ok: bool,
    n: u64,
) -> ScopeRecord {
    ScopeRecord {
        kind,
        exe: exe.into(),
        uid,
        path: path.into(),
        daddr: dest.0.into(),
        dport: (!dest.0.is_empty()).then_some(dest.1),
        dns_names: dest.2.iter().map(|s| (*s).to_owned()).collect(),
        succeeded: ok,
        host: "web-1".into(),
        wire: WireFields::default(),
        n,
        first_secs: 1_795_000_000,
        last_secs: 1_795_400_000,
    }
}

/// A request to `dest`: a TLS server name, or an HTTP method, `Host` and path.
fn request(
    dest: (&str, u16, &[&str]),
    sni: Option<&str>,
    http: Option<(&str, &str, &str)>,
    n: u64,
) -> ScopeRecord {
    let mut r = rec(
        Kind::Request,
        "/usr/local/bin/billing-worker",
        1001,
        "",
        dest,
        true,
        n,
    );
    r.wire.sni = sni.map(str::to_owned);
    if sni.is_some() {
        r.wire.alpn = Some(vec!["h2".into()]);
    }
    if let Some((m, h, p)) = http {
        r.wire.http_method = Some(m.into());
        r.wire.http_host = Some(h.into());
        r.wire.http_path = Some(p.into());
    }
    r
}

const CRED: &str = "/etc/billing/aws-credentials";

fn observed() -> Observed {
    Observed::from_records(&records())
}

fn records() -> Vec<ScopeRecord> {
    vec![
        rec(
            Kind::Open,
            "/usr/local/bin/billing-worker",
            1001,
            CRED,
            ("", 0, &[]),
            true,
            120,
        ),
        rec(Kind::Open, "/usr/bin/cat", 0, CRED, ("", 0, &[]), false, 2),
        rec(
            Kind::Connect,
            "/usr/local/bin/billing-worker",
            1001,
            "",
            ("52.218.1.10", 443, &["bucket.s3.eu-west-1.amazonaws.com"]),
            true,
            118,
        ),
        rec(
            Kind::Connect,
            "/usr/local/bin/billing-worker",
            1001,
            "",
            ("10.20.1.7", 5432, &[]),
            true,
            3,
        ),
        rec(
            Kind::Connect,
            "/usr/local/bin/billing-worker",
            1001,
            "",
            ("10.20.1.7", 6432, &[]),
            true,
            1,
        ),
    ]
}

#[test]
fn the_suggestion_is_a_valid_registry_that_allows_exactly_what_was_seen() {
    let text = suggest("billing-s3-writer", &observed(), None, "over the last 7d");
    let r = registry::parse(&text, "suggestion").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let n = r.nhi("billing-s3-writer").expect("the NHI");
    assert_eq!(n.credentials.len(), 1);
    assert!(n.credentials[0].matches(CRED));
    let readers = n.readers.as_ref().expect("readers");
    assert!(readers.allows("/usr/local/bin/billing-worker", 1001));
    assert!(
        !readers.allows("/usr/bin/cat", 0),
        "a refused open is not a reader"
    );
    assert!(
        !readers.allows("/usr/local/bin/billing-worker", 0),
        "only the uid seen"
    );
    let eps = n.endpoints.as_ref().expect("endpoints");
    let allowed = |a: &str, port: u16, names: &[&str]| {
        eps.iter()
            .any(|e| e.allows(a.parse().unwrap(), port, names))
    };
    assert!(allowed(
        "52.218.9.9",
        443,
        &["bucket.s3.eu-west-1.amazonaws.com"]
    ));
    assert!(
        !allowed("52.218.1.10", 443, &[]),
        "by name, not by the address it had"
    );
    assert!(allowed("10.20.1.7", 5432, &[]) && allowed("10.20.1.7", 6432, &[]));
    assert!(!allowed("10.20.1.8", 5432, &[]), "the address alone");
    assert!(!allowed("10.20.1.7", 22, &[]), "the ports used only");
    assert!(
        text.contains(r#""/usr/bin/cat" tried to open the credential 2 time(s)"#),
        "{text}"
    );
    assert!(text.contains("120 use(s)"), "{text}");
}

#[test]
fn with_the_registry_it_keeps_what_is_declared_and_notes_what_went_unused() {
    let declared = registry::parse(
        "nhis:\n  - id: billing-s3-writer\n    owner: team-billing\n    credentials: [/etc/billing/*]\n    \
         readers:\n      exe: [/usr/local/bin/billing-worker, /usr/bin/python3*]\n      uid: [1001, 1002]\n    \
         endpoints:\n      - host: \"*.s3.eu-west-1.amazonaws.com\"\n        port: 443\n      - cidr: 192.168.0.0/16\n    \
         max_age: 90days\n    expires: 2027-06-30T00:00:00Z\n",
        "registry.yaml",
    )
    .expect("registry");
    let d = declared.nhi("billing-s3-writer").expect("nhi");
    let text = suggest(
        "billing-s3-writer",
        &observed(),
        Some(d),
        "over the last 7d",
    );
    let r = registry::parse(&text, "suggestion").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let n = r.nhi("billing-s3-writer").expect("nhi");
    assert_eq!(n.owner.as_deref(), Some("team-billing"));
    assert_eq!(n.credentials[0].to_string(), "/etc/billing/*");
    assert_eq!(n.max_age, d.max_age);
    assert_eq!(n.expires, d.expires);
    assert!(
        text.contains(r#"declared, never seen (remove?): exe "/usr/bin/python3*""#),
        "{text}"
    );
    assert!(
        text.contains("declared, never seen (remove?): uid 1002"),
        "{text}"
    );
    assert!(
        text.contains(r#"declared, never used (remove?): cidr "192.168.0.0/16""#),
        "{text}"
    );
    assert!(
        !text.contains("never used (remove?): host"),
        "the S3 endpoint was used:\n{text}"
    );
}

#[test]
fn nothing_observed_suggests_nothing_allowed() {
    let text = suggest("idle", &Observed::default(), None, "over the last 7d");
    assert!(text.contains("Nothing was observed"), "{text}");
    // No file, no reader, no endpoint: the entry needs a path before it is valid, and says so.
    assert!(text.contains("add its path"), "{text}");
}

#[test]
fn every_string_written_is_quoted_so_no_name_adds_a_line() {
    let evil = "/tmp/x\nnhis: []\n# \u{85}\u{2028}";
    let o = Observed::from_records(&[
        rec(Kind::Open, evil, 0, CRED, ("", 0, &[]), true, 1),
        rec(Kind::Open, evil, 0, CRED, ("", 0, &[]), false, 1),
        rec(
            Kind::Connect,
            evil,
            0,
            "",
            ("10.0.0.1", 443, &["a\nb.example"]),
            true,
            1,
        ),
    ]);
    let y = suggest("api\nx", &o, None, "over the last 7d");
    for line in y.lines() {
        assert!(
            line.trim_start().starts_with(['#', '-', '[']) || line.trim_start().contains(':'),
            "a line the suggestion did not mean to write: {line:?}\n{y}"
        );
        assert!(!line.starts_with("nhis: []"), "{y}");
    }
    assert!(
        !y.chars()
            .any(|c| crate::domain::text::unprintable(c) && c != '\n'),
        "{y:?}"
    );
    // The refused reader, named in a comment, is quoted there too.
    assert!(
        y.contains(r#"# "/tmp/x\nnhis: []\n# \u0085\u2028" tried to open"#),
        "{y}"
    );
    // And the YAML still reads back to the very names.
    let v: serde_norway::Value = serde_norway::from_str(&y).expect("yaml");
    assert_eq!(v["nhis"][0]["id"].as_str(), Some("api\nx"));
    assert_eq!(v["nhis"][0]["readers"]["exe"][0].as_str(), Some(evil));
    assert_eq!(
        v["nhis"][0]["endpoints"][0]["host"].as_str(),
        Some("a\nb.example")
    );
}

#[test]
fn requests_give_the_endpoints_their_server_names_methods_and_paths() {
    const S3: &str = "bucket.s3.eu-west-1.amazonaws.com";
    let mut rows = records();
    let s3 = ("52.218.1.10", 443, &[S3][..]);
    let api = ("10.20.1.7", 8080, &[][..]);
    rows.extend([
        request(s3, Some(S3), None, 100),
        request(s3, Some("s3.eu-west-1.amazonaws.com"), None, 18),
        // Plaintext HTTP to an address no DNS answer named; its connect is outside the window.
        request(
            api,
            None,
            Some(("GET", "api.internal:8080", "/v1/charges/ch_1")),
            5,
        ),
        request(
            api,
            None,
            Some(("POST", "api.internal:8080", "/v1/refunds")),
            2,
        ),
    ]);
    // Five paths in one directory are folded into `dir/*`.
    for i in 0..5 {
        let path = format!("/v1/reports/r-{i}.csv");
        rows.push(request(
            api,
            None,
            Some(("GET", "api.internal:8080", &path)),
            1,
        ));
    }
    let o = Observed::from_records(&rows);
    let text = suggest("billing-s3-writer", &o, None, "over the last 7d");
    let r = registry::parse(&text, "suggestion").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let n = r.nhi("billing-s3-writer").expect("the NHI");
    let eps = n.endpoints.as_ref().expect("endpoints");
    let s3_ep = eps
        .iter()
        .find(|e| e.host.as_ref().is_some_and(|h| h.as_str() == S3))
        .unwrap_or_else(|| panic!("no S3 endpoint:\n{text}"));
    assert_eq!(
        s3_ep.sni.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        [S3, "s3.eu-west-1.amazonaws.com"],
        "{text}"
    );
    assert!(
        s3_ep.methods.is_empty() && s3_ep.paths.is_empty(),
        "TLS has no method or path"
    );
    assert!(s3_ep.allows_api(Some(S3), None, None, Tls));
    assert!(!s3_ep.allows_api(Some("api.github.com"), None, None, Tls));
    let api_ep = eps
        .iter()
        .find(|e| e.cidr.is_some() && e.allows("10.20.1.7".parse().unwrap(), 8080, &[] as &[&str]))
        .unwrap_or_else(|| panic!("no endpoint of 10.20.1.7:8080:\n{text}"));
    assert_eq!(
        api_ep.sni.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        ["api.internal"]
    );
    assert_eq!(api_ep.methods, ["GET", "POST"], "{text}");
    let ok = |m: &str, p: &str| api_ep.allows_api(Some("api.internal"), Some(m), Some(p), Http);
    assert!(ok("GET", "/v1/charges/ch_1") && ok("POST", "/v1/refunds"));
    assert!(
        ok("GET", "/v1/reports/r-4.csv") && ok("GET", "/v1/reports/r-99.csv"),
        "{text}"
    );
    assert!(
        !ok("GET", "/v1/charges/ch_2"),
        "the paths seen, not their directory"
    );
    assert!(!ok("DELETE", "/v1/refunds"), "the methods seen only");
    assert!(!ok("GET", "/v2/refunds"));
    assert!(text.contains("5 paths, 5 request(s)"), "{text}");
    // The port of a request whose connect was not seen is in the endpoint.
    assert!(
        text.contains("- cidr: \"10.20.1.7/32\"\n        ports: [5432, 6432, 8080]"),
        "{text}"
    );
}

/// A path segment masked as a secret (`/bot***/send` as read from the wire) is learned as `*`:
/// the suggestion matches the masked path, and any token in its place.
#[test]
fn a_masked_path_segment_is_learned_as_a_wildcard() {
    let api = ("10.20.1.7", 80, &[][..]);
    let o = Observed::from_records(&[
        rec(Kind::Open, "/usr/bin/curl", 0, CRED, ("", 0, &[]), true, 1),
        request(
            api,
            None,
            Some(("POST", "api.internal", "/bot/***/send")),
            3,
        ),
    ]);
    let text = suggest("x", &o, None, "over the last 7d");
    let r = registry::parse(&text, "suggestion").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let ep = &r
        .nhi("x")
        .expect("nhi")
        .endpoints
        .as_ref()
        .expect("endpoints")[0];
    assert!(text.contains("- \"/bot/*/send\""), "{text}");
    assert!(ep.allows_api(
        Some("api.internal"),
        Some("POST"),
        Some("/bot/***/send"),
        Http
    ));
    assert!(!ep.allows_api(
        Some("api.internal"),
        Some("POST"),
        Some("/bot/***/delete"),
        Http
    ));
}

#[test]
fn an_api_the_registry_cannot_write_leaves_that_list_out_and_says_why() {
    let api = ("10.20.1.7", 80, &[][..]);
    let o = Observed::from_records(&[
        rec(Kind::Open, "/usr/bin/curl", 0, CRED, ("", 0, &[]), true, 1),
        request(api, None, Some(("GET", "api.internal", "/")), 3),
        request(api, None, Some(("GET", "api.internal", "/v1/x")), 1),
        request(api, None, Some(("get", "api.internal", "/v1/x")), 1),
    ]);
    let text = suggest("x", &o, None, "over the last 7d");
    let r = registry::parse(&text, "suggestion").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let ep = &r
        .nhi("x")
        .expect("nhi")
        .endpoints
        .as_ref()
        .expect("endpoints")[0];
    // The root is a path like any other; a lowercase method is not one the registry takes.
    assert_eq!(ep.paths.len(), 2, "{text}");
    assert!(ep.methods.is_empty(), "{text}");
    assert!(
        ep.allows_api(Some("api.internal"), Some("GET"), Some("/"), Http),
        "{text}"
    );
    assert!(
        !ep.allows_api(Some("api.internal"), Some("GET"), Some("/v2"), Http),
        "{text}"
    );
    assert!(
        text.contains(r#"# methods: not written, "get" is not"#),
        "{text}"
    );
    // A path with a `*` in it cannot be written as a pattern that matches only it.
    let o = Observed::from_records(&[
        rec(Kind::Open, "/usr/bin/curl", 0, CRED, ("", 0, &[]), true, 1),
        request(api, None, Some(("GET", "api.internal", "/files/a*b")), 1),
    ]);
    let text = suggest("x", &o, None, "over the last 7d");
    let r = registry::parse(&text, "suggestion").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let ep = &r
        .nhi("x")
        .expect("nhi")
        .endpoints
        .as_ref()
        .expect("endpoints")[0];
    assert!(ep.paths.is_empty(), "{text}");
    assert!(
        text.contains(r#"# paths: not written, the path "/files/a*b" cannot"#),
        "{text}"
    );
    assert!(
        text.contains("ports: [80]  # from requests; no connection seen"),
        "{text}"
    );
}
