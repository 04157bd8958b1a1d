//! A connection's first bytes, as the kernel hands them to the daemon (at most
//! `monitor_common::WIRE_CAP` of them, in pieces, from any process that holds a credential:
//! hostile input) into `domain::wire` (`read`, `read_whole`, the `join::Joiner`), and the
//! fields they give into their JSON.
//!
//! The input is the bytes themselves. Properties: no panic; every field is a piece of the input
//! (names and hosts lowercased; a path's segments as its escapes decode), so nothing is made up
//! and nothing but the named fields leaves; a path never carries its query string, fragment,
//! `;` parameters or a `.`/`..` segment and is at most `MAX_PATH` long; at most 8 ALPN
//! protocols; the fields' JSON pieces make one valid object with exactly those keys; and the
//! bytes sent in pieces (cut where the first input byte says) and joined read exactly as the
//! bytes sent at once: a reading that says it is done is never changed by what follows.

use std::time::Instant;

use monitor_common::{RequestEvent, WIRE_CAP};
use nhiscope::domain::wire::{join::Joiner, parse, read_whole, MAX_PATH};

pub fn check(data: &[u8]) {
    let data = &data[..data.len().min(WIRE_CAP)];
    joined_reads_as_whole(data);
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
        let decoded = unescaped(data);
        for seg in p.split('/').filter(|s| *s != "***") {
            assert!(
                within(seg, &decoded),
                "path segment {seg:?} is not in the input"
            );
            assert!(seg != "." && seg != "..", "path {p:?} keeps a dot segment");
        }
        assert!(
            !p.contains(['?', '#', ';']),
            "path {p:?} keeps its query, fragment or parameters"
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

/// The input with the escapes of unreserved characters decoded and the others in capitals, as
/// a path's segments are made.
fn unescaped(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        let hex = data
            .get(i + 1..i + 3)
            .filter(|_| data[i] == b'%')
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok().map(|v| (h, v)));
        match hex {
            Some((_, v)) if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                out.push(v);
                i += 3;
            }
            Some((h, _)) => {
                out.push(b'%');
                out.extend(h.to_ascii_uppercase().bytes());
                i += 3;
            }
            None => {
                out.push(data[i]);
                i += 1;
            }
        }
    }
    out
}

/// The bytes in up to four pieces (where the first byte says), each a record of its own with
/// its sequence number, the second one sent twice (a retransmission): they read as the bytes
/// sent at once.
fn joined_reads_as_whole(data: &[u8]) {
    let Some(&seed) = data.first() else {
        return;
    };
    let mut cuts = vec![0, data.len()];
    for k in 1..4u32 {
        cuts.push(data.len() * usize::from(seed.rotate_left(k * 2) & 0x3f) / 64);
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut r = Box::new(RequestEvent::piece(9, 0, 0, &[], 0));
    let base = u32::from(seed).wrapping_mul(0x0101_0101).wrapping_sub(7);
    let mut j = Joiner::default();
    let mut out = Vec::new();
    let now = Instant::now();
    let mut chunk = 0u16;
    for (i, w) in cuts.windows(2).enumerate() {
        let piece = &data[w[0]..w[1]];
        for _ in 0..if i == 1 { 2 } else { 1 } {
            r.len = piece.len() as u32;
            r.seq = base.wrapping_add(w[0] as u32);
            r.chunk = chunk;
            r.data[..piece.len()].copy_from_slice(piece);
            chunk += 1;
            j.add(&r, now, &mut out);
        }
    }
    j.expire(None, &mut out);
    assert_eq!(out.len(), 1, "one reading per connection: {out:?}");
    assert_eq!(
        out[0].1,
        read_whole(data),
        "joined pieces read otherwise than whole"
    );
}
