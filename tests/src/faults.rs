//! Fault injection between the store and a real ClickHouse: [`RejectingProxy`] passes every
//! request through to the server, except inserts whose body carries a marker, which it answers
//! the way ClickHouse answers data it cannot parse (HTTP 400, `Code: 27`). A test marks one
//! event (say, its `exe`) and sees what becomes of that batch and of the ones behind it.
//!
//! Plain HTTP/1.1 over threads, one request per connection (`Connection: close` both ways):
//! enough for the store's client, and nothing to get wrong about keep-alive. Bodies are read
//! whole (`Content-Length` or chunked), so the store must send them uncompressed for the marker
//! to be seen (`compression: none`).

use std::{
    io::BufReader,
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

/// A proxy on `127.0.0.1:<port>` in front of a ClickHouse; stops when dropped.
pub struct RejectingProxy {
    port: u16,
    rejected: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

/// What ClickHouse 18.16 answers to a RowBinary body it cannot read.
const REJECTION: &str = "Code: 27, e.displayText() = DB::Exception: Cannot parse input: \
                         expected end of row (injected by the test's proxy), e.what() = DB::Exception\n";

impl RejectingProxy {
    /// Listens on a free port and forwards to `127.0.0.1:upstream_port`, rejecting every
    /// insert whose body contains `marker`.
    pub fn start(upstream_port: u16, marker: &[u8]) -> RejectingProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|e| panic!("proxy: cannot listen: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy: {e}"))
            .port();
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("proxy: {e}"));
        let rejected = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, marker) = (Arc::clone(&rejected), Arc::clone(&stop), marker.to_vec());
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (r, marker) = (Arc::clone(&r), marker.clone());
                        thread::spawn(move || {
                            if let Err(e) = serve(conn, upstream_port, &marker, &r) {
                                eprintln!("proxy: {e}");
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        RejectingProxy {
            port,
            rejected,
            stop,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Inserts answered with the rejection so far.
    pub fn rejected(&self) -> u32 {
        self.rejected.load(Ordering::Relaxed)
    }
}

impl Drop for RejectingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A request or response head: its first line and headers, without the ones this proxy
/// rewrites (framing and connection handling).
struct Head {
    first: String,
    headers: Vec<(String, String)>,
    length: Option<usize>,
    chunked: bool,
}

fn read_head(r: &mut impl std::io::BufRead) -> std::io::Result<Option<Head>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut head = Head {
        first: first.trim_end().to_owned(),
        headers: Vec::new(),
        length: None,
        chunked: false,
    };
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            return Ok(Some(head));
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k.to_ascii_lowercase().as_str() {
            "content-length" => head.length = v.parse().ok(),
            "transfer-encoding" => head.chunked = v.eq_ignore_ascii_case("chunked"),
            "connection" | "keep-alive" => {}
            _ => head.headers.push((k.to_owned(), v.to_owned())),
        }
    }
}

/// The body after `head`: by length, chunks, or (a response without either) to the end.
fn read_body(r: &mut impl std::io::BufRead, head: &Head) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head.chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|e| std::io::Error::other(format!("bad chunk size {size:?}: {e}")))?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
            if n == 0 {
                // Trailers, if any, end with an empty line; the client sends none.
                return Ok(body);
            }
        }
    }
    match head.length {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        }
        None if head.first.starts_with("HTTP/") => {
            r.read_to_end(&mut body)?;
        }
        None => {}
    }
    Ok(body)
}

fn write_message(w: &mut impl std::io::Write, head: &Head, body: &[u8]) -> std::io::Result<()> {
    let mut out = format!("{}\r\n", head.first);
    for (k, v) in &head.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    w.write_all(out.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

fn serve(
    client: TcpStream,
    upstream_port: u16,
    marker: &[u8],
    rejected: &AtomicU32,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let Some(req) = read_head(&mut reader)? else {
        return Ok(());
    };
    let body = read_body(&mut reader, &req)?;
    let insert = req.first.to_ascii_uppercase().contains("INSERT");
    if insert && body.windows(marker.len()).any(|w| w == marker) {
        rejected.fetch_add(1, Ordering::Relaxed);
        let head = Head {
            first: "HTTP/1.1 400 Bad Request".into(),
            headers: vec![
                ("Content-Type".into(), "text/plain; charset=UTF-8".into()),
                ("X-ClickHouse-Exception-Code".into(), "27".into()),
            ],
            length: None,
            chunked: false,
        };
        return write_message(&mut client, &head, REJECTION.as_bytes());
    }
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    write_message(&mut upstream, &req, &body)?;
    let mut up = BufReader::new(upstream);
    let Some(resp) = read_head(&mut up)? else {
        return Ok(());
    };
    let resp_body = read_body(&mut up, &resp)?;
    write_message(&mut client, &resp, &resp_body)
}
