use super::*;

const HELLO: &[u8] = include_bytes!("../curl-client-hello.bin");
const COOKIE: u64 = 77;

fn record(chunk: u16, seq: u32, bytes: &[u8], flags: u16) -> RequestEvent {
    let mut r = RequestEvent::piece(COOKIE, chunk, seq, bytes, flags);
    r.hdr.pid = 4242;
    r
}

/// Feeds records in order; what was read, by then.
fn feed(j: &mut Joiner, records: &[RequestEvent]) -> Vec<(Conn, Reading)> {
    let mut out = Vec::new();
    for r in records {
        j.add(r, Instant::now(), &mut out);
    }
    out
}

#[test]
fn a_client_hello_sent_in_pieces_is_read_whole() {
    // A decoy of a bare record header first, the rest later: the name is still read.
    let mut j = Joiner::default();
    let out = feed(&mut j, &[record(0, 1000, &HELLO[..5], 0)]);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(j.len(), 1);
    let out = feed(&mut j, &[record(1, 1005, &HELLO[5..], 0)]);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].1.readout, Readout::Tls);
    assert_eq!(out[0].1.fields.sni.as_deref(), Some("api.example.test"));
    assert!(j.is_empty());
    // Later packets of the connection are not read again.
    assert!(feed(&mut j, &[record(2, 1517, b"GET /x HTTP/1.1\r\n\r\n", 0)]).is_empty());
    assert!(j.is_empty());
}

#[test]
fn retransmitted_and_overlapping_segments_add_only_their_new_bytes() {
    let mut j = Joiner::default();
    let out = feed(
        &mut j,
        &[
            record(0, u32::MAX - 50, &HELLO[..100], 0),
            // The first segment again, then one that overlaps it: the sequence wraps.
            record(1, u32::MAX - 50, &HELLO[..100], 0),
            record(2, (u32::MAX - 50).wrapping_add(60), &HELLO[60..300], 0),
            record(3, (u32::MAX - 50).wrapping_add(300), &HELLO[300..], 0),
        ],
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].1.fields.sni.as_deref(), Some("api.example.test"));
    assert_eq!(out[0].1.readout, Readout::Tls);
}

#[test]
fn a_connection_ends_its_wait_at_the_kernels_last_record_a_gap_or_its_end() {
    // The kernel's last record: a ClientHello still not whole is unreadable.
    let mut j = Joiner::default();
    let out = feed(
        &mut j,
        &[
            record(0, 1, &HELLO[..40], 0),
            record(1, 41, &HELLO[40..80], WIRE_LAST),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.readout, Readout::Unreadable);
    // A record lost in between: what came before is all there is.
    let out = feed(
        &mut j,
        &[
            record(0, 1, &HELLO[..40], 0),
            record(1, 100, &HELLO[99..], 0),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.readout, Readout::Unreadable);
    assert_eq!(out[0].1.fields.sni, None);
    // An HTTP head cut after its one Host line names its server when no more comes.
    let out = feed(
        &mut j,
        &[record(0, 1, b"GET /v1 HTTP/1.1\r\nHost: a.test\r\n", 0)],
    );
    assert!(out.is_empty());
    let mut out = Vec::new();
    j.end_of(999, &mut out);
    assert!(out.is_empty(), "another process's end");
    j.end_of(4242, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.readout, Readout::Http);
    assert_eq!(out[0].1.fields.http_host.as_deref(), Some("a.test"));
    // Bytes that stop coming are read after the wait.
    feed(&mut j, &[record(0, 1, b"GET /v1 HT", 0)]);
    let mut out = Vec::new();
    j.expire(Some(Instant::now()), &mut out);
    assert!(out.is_empty(), "not yet");
    j.expire(Some(Instant::now() + WAIT), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.readout, Readout::Unreadable);
    assert!(j.is_empty());
}

/// A socket connected again (`connect(AF_UNSPEC)`, then another `connect`) starts its first
/// bytes again: the earlier connection's are read as they are, the new one's from the start.
#[test]
fn a_socket_connected_again_reads_its_new_first_bytes() {
    let mut j = Joiner::default();
    let out = feed(
        &mut j,
        &[
            record(0, 1, b"GET /v1 HTTP/1.1\r\nHost: api.test\r\n", 0),
            record(
                0,
                9000,
                b"GET /admin HTTP/1.1\r\nHost: evil.test\r\n\r\n",
                0,
            ),
        ],
    );
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].1.fields.http_host.as_deref(), Some("api.test"));
    assert_eq!(out[1].1.fields.http_path.as_deref(), Some("/admin"));
    assert!(j.is_empty());
}

#[test]
fn a_packet_the_kernel_could_not_read_makes_the_connection_unreadable() {
    let mut j = Joiner::default();
    feed(&mut j, &[record(0, 1, &HELLO[..40], 0)]);
    let out = feed(&mut j, &[record(0, 0, &[], WIRE_LAST | WIRE_UNREADABLE)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.readout, Readout::Unreadable);
    assert_eq!(out[0].0.dport, 443);
    assert!(j.is_empty());
}

#[test]
fn too_many_waiting_connections_read_the_oldest_first() {
    let mut j = Joiner::default();
    let mut out = Vec::new();
    let t0 = Instant::now();
    for i in 0..PENDING_MAX as u64 {
        let mut r = record(0, 1, b"GET / HTTP/1.1\r\n", 0);
        r.cookie = i;
        r.sport = i as u16;
        j.add(&r, t0 + Duration::from_micros(i), &mut out);
    }
    assert!(out.is_empty());
    let mut r = record(0, 1, b"GET / HTTP/1.1\r\n", 0);
    r.cookie = u64::MAX;
    j.add(&r, t0 + WAIT, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.sport, 0, "the oldest");
    assert_eq!(j.len(), PENDING_MAX);
}
