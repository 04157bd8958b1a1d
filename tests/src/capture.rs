//! An HTTP server that answers `200 OK` to everything and keeps every request: pointed at by
//! the store in place of ClickHouse, it yields the exact bytes the sink sends (for replaying them
//! into another engine).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex, PoisonError},
    thread,
};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    /// The request target as sent (`/?database=x&query=INSERT%20...`).
    pub target: String,
    pub body: Vec<u8>,
}

impl Request {
    /// The value of a query-string parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    }
}

/// The server; it runs until the process ends.
pub struct Capture {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Capture {
    #[track_caller]
    pub fn start() -> Capture {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind 127.0.0.1:0: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"))
            .port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&requests);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let into = Arc::clone(&into);
                thread::spawn(move || serve(stream, &into));
            }
        });
        Capture { port, requests }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Serves one keep-alive connection until the peer closes it.
fn serve(stream: TcpStream, into: &Mutex<Vec<Request>>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                if r.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                if r.read_exact(&mut chunk).is_err() {
                    return;
                }
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            body.resize(length, 0);
            if r.read_exact(&mut body).is_err() {
                return;
            }
        }
        into.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Request { target, body });
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        if writer.write_all(ok).is_err() {
            return;
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Send `batches` through the real sink to a [`Capture`] server and return what each request
/// carried: (table, insert SQL, RowBinary body, dedup token). Uncompressed, so the body is the
/// exact RowBinary another engine can load.
pub fn capture_inserts(
    schema: &nhiscope::publish::store::schema::Schema,
    batches: &[nhiscope::publish::store::sink::Batch],
) -> Vec<(
    nhiscope::publish::store::schema::Table,
    String,
    Vec<u8>,
    String,
)> {
    use nhiscope::publish::store::{config::Compression, sink::Conn, StoreConfig};
    let capture = Capture::start();
    let mut config = StoreConfig::new(&capture.url()).unwrap_or_else(|e| panic!("{e}"));
    config.compression = Compression::None;
    let conn = Conn::unmigrated(&config, schema.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    for b in batches {
        rt.block_on(conn.insert(b))
            .unwrap_or_else(|e| panic!("sending {}: {e}", b.token));
    }
    let reqs = capture.requests();
    assert_eq!(reqs.len(), batches.len(), "one request per batch: {reqs:?}");
    batches
        .iter()
        .zip(reqs)
        .map(|(b, r)| {
            let sql = r
                .param("query")
                .unwrap_or_else(|| panic!("no query in {}", r.target));
            let token = r.param("insert_deduplication_token").unwrap_or_default();
            (b.table(), sql, r.body, token)
        })
        .collect()
}

/// `INSERT INTO db.t (cols) SELECT * FROM file(path, RowBinary, 'structure')` for a captured
/// `INSERT INTO t(cols) FORMAT RowBinary`, with the column types of the schema.
pub fn replay(
    s: &nhiscope::publish::store::schema::Schema,
    t: nhiscope::publish::store::schema::Table,
    sql: &str,
    path: &std::path::Path,
    token: &str,
) -> String {
    let open = sql
        .find('(')
        .unwrap_or_else(|| panic!("no column list in {sql}"));
    let close = sql
        .find(')')
        .unwrap_or_else(|| panic!("no column list in {sql}"));
    assert!(sql[close..].contains("FORMAT RowBinary"), "{sql}");
    let names: Vec<String> = sql[open + 1..close]
        .split(',')
        .map(|c| c.trim().trim_matches('`').to_owned())
        .collect();
    let types = s.column_types(t);
    let structure: Vec<String> = names
        .iter()
        .map(|n| {
            let (_, ty) = types
                .iter()
                .find(|(c, _)| c == n)
                .unwrap_or_else(|| panic!("the sink sends column {n}, which {t:?} lacks"));
            format!("{n} {ty}")
        })
        .collect();
    assert_eq!(
        names.len(),
        types.len(),
        "the sink must send every column of {t:?}"
    );
    format!(
        "INSERT INTO {} ({}) SETTINGS insert_deduplication_token = '{token}' \
         SELECT * FROM file('{}', 'RowBinary', '{}')",
        s.table(t),
        names.join(", "),
        path.display(),
        structure.join(", ").replace('\'', "\\'"),
    )
}
