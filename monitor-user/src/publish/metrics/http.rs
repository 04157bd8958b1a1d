//! The metrics server: a minimal HTTP/1.1 responder for `GET /metrics` and `GET /healthz`, on
//! a thread and a tokio runtime of its own, so that neither a scrape nor a hostile client can
//! slow the daemon's event loop.
//!
//! Any local process may connect, so everything is bounded: at most [`MAX_CONNECTIONS`] at
//! once (more are closed at once), a request head of at most [`MAX_REQUEST`] bytes (a body is
//! never read), and [`CONNECTION_TIMEOUT`] for reading the request and writing the answer.
//! Every answer closes the connection.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use super::{Health, Metrics, CONTENT_TYPE};

/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 16;
/// The longest request head (request line and headers) read.
pub const MAX_REQUEST: usize = 8 << 10;
/// Time a connection has to send its request and take the answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Listens on `addr` (non-blocking, for the server's runtime). Called before the daemon loads
/// its probes, so that a port in use stops it at once.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves `metrics` on `listener` from a new thread, until the process exits.
pub fn spawn(listener: std::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("metrics: cannot start the server's runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => serve(l, metrics).await,
                    Err(e) => log::error!("metrics: cannot serve on {addr}: {e}"),
                }
            });
        })?;
    log::info!("metrics on http://{addr}/metrics and http://{addr}/healthz");
    Ok(())
}

/// Accepts connections forever, each on a task of its own.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                log::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            log::debug!("metrics: {MAX_CONNECTIONS} connections open already: closing one more");
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let _slot = slot;
            if tokio::time::timeout(CONNECTION_TIMEOUT, connection(stream, &metrics))
                .await
                .is_err()
            {
                log::debug!("metrics: a client took longer than {CONNECTION_TIMEOUT:?}: closed");
            }
        });
    }
}

/// Reads one request head, answers it and closes.
async fn connection(mut stream: TcpStream, metrics: &Arc<Metrics>) {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let head = loop {
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        if let Some(end) = head_end(&buf[..len]) {
            break Some(&buf[..end]);
        }
        if len == buf.len() {
            break None;
        }
    };
    let response = match head {
        Some(head) => respond(head, metrics),
        None => Response::text(
            431,
            "Request Header Fields Too Large",
            "request head too large\n",
        ),
    };
    let _ = stream.write_all(&response.bytes()).await;
    let _ = stream.shutdown().await;
}

/// Where the request head ends (after its blank line), if it does within `buf`.
fn head_end(buf: &[u8]) -> Option<usize> {
    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(i + 4);
    }
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// An answer: status, content type and body (left out for `HEAD`).
#[derive(Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub reason: &'static str,
    pub content_type: &'static str,
    pub body: String,
    pub head_only: bool,
    pub allow: bool,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            head_only: false,
            allow: false,
        }
    }

    /// The whole answer on the wire.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if self.allow {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        if !self.head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

/// The answer to one request head.
pub fn respond(head: &[u8], metrics: &Arc<Metrics>) -> Response {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).unwrap_or_default().trim_end();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "Bad Request", "bad request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text(400, "Bad Request", "only HTTP/1.x is served\n");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut r = Response::text(405, "Method Not Allowed", "only GET and HEAD\n");
            r.allow = true;
            return r;
        }
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let mut r = match path {
        "/metrics" => match Metrics::render(metrics) {
            Ok(text) => Response {
                content_type: CONTENT_TYPE,
                ..Response::text(200, "OK", text)
            },
            Err(_) => Response::text(500, "Internal Server Error", "cannot encode the metrics\n"),
        },
        "/healthz" => match metrics.health() {
            Health::Ok(why) => Response::text(200, "OK", why + "\n"),
            Health::Failing(why) => Response::text(503, "Service Unavailable", why + "\n"),
        },
        "/" => Response::text(200, "OK", "nhiscope: /metrics (Prometheus), /healthz\n"),
        _ => Response::text(404, "Not Found", "not found: /metrics or /healthz\n"),
    };
    r.head_only = head_only;
    r
}
