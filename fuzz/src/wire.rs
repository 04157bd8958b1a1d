//! A connection's first bytes, as the kernel hands them to the daemon (at most
//! `monitor_common::WIRE_CAP` of them, from any process that holds a credential: hostile input)
//! into `domain::wire::parse`, and the fields it gives into their JSON.
//!
//! The input is the bytes themselves. Properties: no panic; every field is a piece of the input
//! (names and hosts lowercased), so nothing is made up and nothing but the named fields leaves;
//! a path never carries its query string or fragment and is at most `MAX_PATH` long; at most 8
//! ALPN protocols; and the fields' JSON pieces make one valid object with exactly those keys.

use nhiscope::domain::wire::{parse, MAX_PATH};

pub fn check(data: &[u8]) {
    let data = &data[..data.len().min(monitor_common::WIRE_CAP)];
    let f = parse(data);
    let lower: Vec<u8> = data.iter().map(u8::to_ascii_lowercase).collect();
    let within =
        |s: &str, hay: &[u8]| s.is_empty() || hay.windows(s.len()).any(|w| w == s.as_bytes());
    let mut keys = Vec::new();
    if let Some(s) = &f.sni {
        assert!(within(s, &lower), "sni {s:?} is not in the input");
        assert!(s.bytes().all(|c| c.is_ascii_graphic()), "{s:?}");
        keys.push("sni");
    }
    if let Some(a) = &f.alpn {
        assert!(a.len() <= 8, "{} ALPN protocols", a.len());
        for p in a {
            assert!(within(p, data), "alpn {p:?} is not in the input");
            assert!(p.bytes().all(|c| c.is_ascii_graphic()), "{p:?}");
        }
        keys.push("alpn");
    }
    if let Some(v) = &f.tls_version {
        assert!(
            v.starts_with("1.") || v.starts_with("ssl"),
            "tls_version {v:?}"
        );
        keys.push("tls_version");
    }
    if let Some(m) = &f.http_method {
        assert!(within(m, data), "method {m:?} is not in the input");
        assert!(m.bytes().all(|c| c.is_ascii_uppercase()), "{m:?}");
        keys.push("http_method");
    }
    if let Some(h) = &f.http_host {
        assert!(within(h, &lower), "host {h:?} is not in the input");
        assert!(h.bytes().all(|c| c.is_ascii_graphic()), "{h:?}");
        keys.push("http_host");
    }
    if let Some(p) = &f.http_path {
        assert!(within(p, data), "path {p:?} is not in the input");
        assert!(
            !p.contains(['?', '#']),
            "path {p:?} keeps its query or fragment"
        );
        assert!(p.len() <= MAX_PATH, "path of {} bytes", p.len());
        assert!(p.bytes().all(|c| c.is_ascii_graphic()), "{p:?}");
        keys.push("http_path");
    }
    let mut json = Vec::new();
    f.write_json(&mut json);
    // `,"key":value` pieces: with the leading comma made a brace, one object.
    let text = String::from_utf8(json).expect("the fields' JSON is UTF-8");
    let object = match text.strip_prefix(',') {
        Some(rest) => format!("{{{rest}}}"),
        None => {
            assert!(text.is_empty(), "{text:?}");
            "{}".to_owned()
        }
    };
    let v: serde_json::Value = serde_json::from_str(&object).expect("the fields' JSON parses");
    let mut got: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    got.sort_unstable();
    keys.sort_unstable();
    assert_eq!(got, keys);
}
