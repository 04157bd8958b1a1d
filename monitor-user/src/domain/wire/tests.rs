use super::*;

/// The ClientHello curl 7.88 (OpenSSL 3.0) sent for
/// `curl --resolve api.example.test:PORT:127.0.0.1 https://api.example.test:PORT/v1/x?secret=1`.
const CURL_HELLO: &[u8] = include_bytes!("curl-client-hello.bin");

#[test]
fn a_client_hello_gives_its_server_name_alpn_and_version() {
    let f = parse(CURL_HELLO);
    assert_eq!(f.sni.as_deref(), Some("api.example.test"));
    assert_eq!(
        f.alpn,
        Some(vec!["h2".to_owned(), "http/1.1".to_owned()]),
        "{f:?}"
    );
    assert_eq!(f.tls_version.as_deref(), Some("1.3"));
    assert_eq!(f.http_method, None);
    assert_eq!(f.server_name(), Some("api.example.test"));
}

#[test]
fn a_client_hello_cut_by_the_capture_keeps_the_whole_extensions_before_the_cut() {
    let f = parse(&CURL_HELLO[..400]);
    assert_eq!(f.sni.as_deref(), Some("api.example.test"));
    assert_eq!(read_whole(&CURL_HELLO[..400]).readout, Readout::Unreadable);
    assert_eq!(read_whole(CURL_HELLO).readout, Readout::Tls);
    // Cut inside the server name: no name, never a part of one.
    let sni_at = CURL_HELLO
        .windows(16)
        .position(|w| w == b"api.example.test")
        .expect("the name is in the fixture");
    for cut in 0..sni_at + 16 {
        let f = parse(&CURL_HELLO[..cut]);
        assert_eq!(f.sni, None, "cut at {cut}");
        assert_eq!(f.alpn, None, "cut at {cut}");
    }
}

#[test]
fn every_cut_and_every_corrupted_byte_is_parsed_without_a_panic() {
    for cut in 0..CURL_HELLO.len() {
        let _ = parse(&CURL_HELLO[..cut]);
    }
    let mut b = CURL_HELLO.to_vec();
    for i in 0..b.len() {
        for v in [0u8, 0x7f, 0xff] {
            let old = b[i];
            b[i] = v;
            let f = parse(&b);
            if let Some(s) = &f.sni {
                assert!(s.bytes().all(|c| c.is_ascii_graphic()), "{s:?}");
            }
            b[i] = old;
        }
    }
}

#[test]
fn a_plaintext_request_gives_method_host_and_path_without_the_query() {
    let req = b"POST /v1/charges/ch_1?api_key=CANARY#frag HTTP/1.1\r\nHost: API.Example.test:8080\r\nAuthorization: Bearer CANARY\r\nContent-Length: 6\r\n\r\nCANARY";
    let f = parse(req);
    assert_eq!(f.http_method.as_deref(), Some("POST"));
    assert_eq!(f.http_host.as_deref(), Some("api.example.test:8080"));
    assert_eq!(f.http_path.as_deref(), Some("/v1/charges/ch_1"));
    assert_eq!(f.server_name(), Some("api.example.test"));
    assert_eq!(f.sni, None);
    let mut line = Vec::new();
    f.write_json(&mut line);
    let line = String::from_utf8(line).expect("utf-8");
    assert!(!line.contains("CANARY"), "{line}");
    assert_eq!(
        line,
        r#","http_method":"POST","http_host":"api.example.test:8080","http_path":"/v1/charges/ch_1""#
    );
}

#[test]
fn proxy_and_tunnel_requests_give_their_path_or_authority() {
    let f = parse(b"GET http://a.test/x/y?q=1 HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(f.http_path.as_deref(), Some("/x/y"));
    let f = parse(b"GET http://a.test?q=1 HTTP/1.0\r\n\r\n");
    assert_eq!(f.http_path.as_deref(), Some("/"));
    assert_eq!(
        f.http_host.as_deref(),
        Some("a.test"),
        "the target's authority"
    );
    let f = parse(b"CONNECT api.test:443 HTTP/1.1\r\nProxy-Authorization: Basic x\r\n\r\n");
    assert_eq!(f.http_method.as_deref(), Some("CONNECT"));
    assert_eq!(f.http_host.as_deref(), Some("api.test:443"));
    assert_eq!(f.http_path, None);
    assert_eq!(f.server_name(), Some("api.test"));
    let f = parse(b"OPTIONS * HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n");
    assert_eq!(f.http_path.as_deref(), Some("*"));
    assert_eq!(f.server_name(), None, "an address is no name");
}

#[test]
fn malformed_or_cut_requests_give_no_fields() {
    for bad in [
        &b""[..],
        b"GET / HTTP/1.1",                   // the line is cut
        b"GET /\r\n\r\n",                    // HTTP/0.9
        b"get / HTTP/1.1\r\n\r\n",           // not a method
        b"GET / HTTP/2.0\r\n\r\n",           // not HTTP/1.x
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", // HTTP/2's preface
        b"GET /a b HTTP/1.1\r\n\r\n",        // a space in the target
        b"GET /\x01 HTTP/1.1\r\n\r\n",       // a control byte
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"\x16\x03\x01\x00",
    ] {
        assert!(parse(bad).is_empty(), "{bad:?}: {:?}", parse(bad));
    }
    // A Host line cut by the capture is not read.
    let f = parse(b"GET /x HTTP/1.1\r\nHost: api.exa");
    assert_eq!(f.http_path.as_deref(), Some("/x"));
    assert_eq!(f.http_host, None);
    // A path too long is not kept.
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_PATH));
    assert_eq!(parse(long.as_bytes()).http_path, None);
}

#[test]
fn a_host_with_a_trailing_dot_names_the_same_server() {
    let f = WireFields {
        http_host: Some("api.test.:8080".into()),
        ..WireFields::default()
    };
    assert_eq!(f.server_name(), Some("api.test"));
}

#[test]
fn a_client_hello_is_read_across_records_and_only_when_whole() {
    // The same message in two TLS records (a sender may fragment it): the same fields.
    let body = &CURL_HELLO[5..];
    let mut two = Vec::new();
    for part in [&body[..30], &body[30..]] {
        two.extend_from_slice(&[0x16, 3, 1]);
        two.extend_from_slice(&(part.len() as u16).to_be_bytes());
        two.extend_from_slice(part);
    }
    let whole = read_whole(&two);
    assert_eq!(whole.readout, Readout::Tls);
    assert_eq!(whole.fields.sni.as_deref(), Some("api.example.test"));
    assert!(matches!(read(&two[..40]), Read::More(_)));
    // A record that is not a handshake, or a name no DNS name can be: unreadable.
    let mut alert = CURL_HELLO.to_vec();
    alert[0] = 0x15;
    assert_eq!(read_whole(&alert).readout, Readout::Other);
    let mut other = CURL_HELLO.to_vec();
    other[1] = 9;
    assert_eq!(read_whole(&other).readout, Readout::Unreadable);
    let at = CURL_HELLO
        .windows(16)
        .position(|w| w == b"api.example.test")
        .expect("the name is in the fixture");
    let mut bad = CURL_HELLO.to_vec();
    bad[at + 3] = b'/';
    let r = read_whole(&bad);
    assert_eq!((r.readout, r.fields.sni), (Readout::Unreadable, None));
}

#[test]
fn a_request_head_is_read_as_a_server_reads_it() {
    let head = |b: &[u8]| read_whole(b);
    // Bare LF line ends, as servers accept them.
    let r = head(b"GET /v1/x HTTP/1.1\nHost: api.test\n\n");
    assert_eq!(r.readout, Readout::Http);
    assert_eq!(r.fields.http_host.as_deref(), Some("api.test"));
    assert!(matches!(
        read(b"GET /v1/x HTTP/1.1\nHost: api.test\n\n"),
        Read::Done(_)
    ));
    // An absolute-form target's authority is the server, whatever `Host` says.
    let r = head(b"GET http://user:pw@evil.test:8080/x HTTP/1.1\r\nHost: api.test\r\n\r\n");
    assert_eq!(r.fields.http_host.as_deref(), Some("evil.test:8080"));
    assert_eq!(r.fields.server_name(), Some("evil.test"));
    // Two `Host` lines: which server is asked is not known.
    let r = head(b"GET / HTTP/1.1\r\nHost: api.test\r\nHost: evil.test\r\n\r\n");
    assert_eq!((r.readout, r.fields.http_host), (Readout::Unreadable, None));
    assert!(matches!(
        read(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n"),
        Read::Done(_)
    ));
    // A head cut after its one `Host` names its server; one cut before does not.
    let r = head(b"GET / HTTP/1.1\r\nHost: api.test\r\nCookie: a=");
    assert_eq!(r.readout, Readout::Http);
    let r = head(b"GET / HTTP/1.1\r\nCookie: a=");
    assert_eq!(r.readout, Readout::Unreadable);
    assert_eq!(
        head(b"GET / HTTP/1.1\r\nHost: \r\n\r\n").readout,
        Readout::Unreadable
    );
    // A first line a server may still take as a request (another version, a lowercase
    // method, doubled spaces, empty lines first) is not another protocol.
    for odd in [
        &b"GET /admin HTTP/1.2\r\nHost: evil.test\r\n\r\n"[..],
        b"get /admin HTTP/1.1\r\nHost: evil.test\r\n\r\n",
        b"GET  /admin HTTP/1.1\r\nHost: evil.test\r\n\r\n",
        b"\r\nGET /admin HTTP/1.1\r\nHost: evil.test\r\n\r\n",
    ] {
        assert_eq!(head(odd).readout, Readout::Unreadable, "{odd:?}");
    }
    // A bracketed name is no name a server has.
    let f = WireFields {
        http_host: Some("[api.test]".into()),
        ..WireFields::default()
    };
    assert_eq!(f.server_name(), Some("[api.test]"));
    // Another protocol, nothing at all.
    assert_eq!(head(b"SSH-2.0-OpenSSH_9.2\r\n").readout, Readout::Other);
    assert_eq!(
        head(b"\x00\x00\x00\x08\x04\xd2\x16\x2f").readout,
        Readout::Other
    );
    assert_eq!(head(b"").readout, Readout::Other);
}

#[test]
fn paths_are_normalised_so_that_no_spelling_passes_for_another() {
    let p = |raw: &str| normal_path(raw.as_bytes());
    assert_eq!(p("/v1/charges").as_deref(), Some("/v1/charges"));
    assert_eq!(p("/v1/../admin").as_deref(), Some("/admin"));
    assert_eq!(p("/v1/%2e%2E/admin").as_deref(), Some("/admin"));
    assert_eq!(p("/v1/./x/").as_deref(), Some("/v1/x/"));
    assert_eq!(p("/v1/x/..").as_deref(), Some("/v1/"));
    assert_eq!(p("/../../etc").as_deref(), Some("/etc"));
    assert_eq!(p("/").as_deref(), Some("/"));
    assert_eq!(p("/%7euser/%41").as_deref(), Some("/~user/A"));
    // An escaped separator, a dot segment with parameters: servers disagree, so no path.
    assert_eq!(p("/a%2fb/x"), None);
    assert_eq!(p("/public/x%5C..%5Cadmin"), None);
    assert_eq!(p("/admin/..;/public/x"), None);
    // Empty segments are merged, as nginx does.
    assert_eq!(p("/public//../admin").as_deref(), Some("/admin"));
    assert_eq!(p("//a///b/").as_deref(), Some("/a/b/"));
    assert_eq!(
        p("/v1;jsessionid=0123456789abcdef/charges;x=1").as_deref(),
        Some("/v1/charges")
    );
    assert_eq!(p("/v1/x?q=1#f").as_deref(), Some("/v1/x"));
    assert_eq!(p("/bad%zz"), None);
    assert_eq!(p("/bad%4"), None);
}

#[test]
fn a_secret_in_a_path_is_masked() {
    let p = |raw: &str| normal_path(raw.as_bytes()).expect("a path");
    assert_eq!(
        p("/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage"),
        "/***/sendMessage"
    );
    assert_eq!(p("/hooks/ghp_a1B2c3D4e5F6g7H8i9J0/x"), "/hooks/***/x");
    assert_eq!(
        p("/v1/%41KIAIOSFODNN7EXAMPLE1/x"),
        "/v1/***/x",
        "an escape does not hide it"
    );
    // Words made for people stay.
    assert_eq!(
        p("/api/v2/repos/octo-org/hello-world/pulls"),
        "/api/v2/repos/octo-org/hello-world/pulls"
    );
    let r = read_whole(b"GET /t/xoxb-1234567890-abcdefghijKL HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(r.fields.http_path.as_deref(), Some("/t/***"));
}

#[test]
fn an_event_s_wire_fields_take_room_only_when_it_has_some() {
    let none = Wire::default();
    assert!(none.is_empty());
    assert_eq!(none, Wire::from(WireFields::default()));
    let mut w = Wire::from(WireFields {
        sni: Some("api.test".into()),
        ..WireFields::default()
    });
    assert_eq!(w.server_name(), Some("api.test"));
    // Emptied again, it equals no fields.
    w.sni = None;
    assert_eq!(w, none);
    assert!(std::mem::size_of::<Wire>() <= 8);
}
