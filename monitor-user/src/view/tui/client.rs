//! The dashboard's side of the live feed: connects to the daemon's socket, turns each line into
//! an [`Update`], and when the daemon is not there (or goes away) says why and tries again, with
//! a backoff from [`FIRST_RETRY`] up to [`MAX_RETRY`], for as long as the dashboard runs.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader},
    net::UnixStream,
    sync::mpsc,
    task::JoinHandle,
};

use super::model::Update;
use crate::publish::live::protocol::Message;

pub const FIRST_RETRY: Duration = Duration::from_millis(250);
pub const MAX_RETRY: Duration = Duration::from_secs(4);
/// A line longer than this is not a message of ours.
const MAX_LINE: usize = 1 << 20;

/// Starts the client on the current runtime; it ends when `tx`'s receiver is dropped.
pub fn spawn(path: PathBuf, tx: mpsc::Sender<Update>) -> JoinHandle<()> {
    tokio::spawn(run(path, tx))
}

async fn run(path: PathBuf, tx: mpsc::Sender<Update>) {
    let mut retry = FIRST_RETRY;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let reason = match UnixStream::connect(&path).await {
            Ok(stream) => {
                if tx.send(Update::Connected).await.is_err() {
                    return;
                }
                retry = FIRST_RETRY;
                attempt = 0;
                match read(stream, &tx).await {
                    Some(reason) => reason,
                    None => return,
                }
            }
            Err(e) => unreachable_reason(&path, &e),
        };
        let down = Update::Down {
            reason,
            attempt: attempt.max(1),
            retry_in: retry,
        };
        if tx.send(down).await.is_err() {
            return;
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// Forwards messages until the connection ends; returns why it ended, or `None` when the
/// dashboard is gone. A full channel holds the reading back, so a dashboard that cannot keep up
/// lets the daemon drop it instead of growing without bound.
async fn read(stream: UnixStream, tx: &mpsc::Sender<Update>) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) => return Some("the daemon closed the connection".to_owned()),
            Ok(n) => n,
            Err(e) => return Some(format!("reading the live feed: {e}")),
        };
        if n == MAX_LINE && line.last() != Some(&b'\n') {
            return Some(format!(
                "the daemon sent a line longer than {MAX_LINE} bytes"
            ));
        }
        let update = match serde_json::from_slice::<Message>(&line) {
            Ok(m) => Update::Message(m),
            Err(e) => Update::Garbled(e.to_string()),
        };
        tx.send(update).await.ok()?;
    }
}

/// Why connecting failed, in words that say what to do.
pub fn unreachable_reason(path: &Path, e: &io::Error) -> String {
    let path = path.display();
    match e.kind() {
        io::ErrorKind::NotFound => {
            format!("daemon not running: no socket at {path} (start `nhiscope daemon`)")
        }
        io::ErrorKind::ConnectionRefused => {
            format!("daemon not running: nothing listens on {path}")
        }
        io::ErrorKind::PermissionDenied => format!(
            "permission denied on {path}: the live feed is for root and the daemon's user \
             (run `sudo nhiscope tui`)"
        ),
        _ => format!("cannot connect to {path}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::{
        domain::event::{Event, Kind, Ts},
        publish::live::Server,
    };

    async fn next(rx: &mut mpsc::Receiver<Update>) -> Update {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an update in time")
            .expect("the client runs")
    }

    #[tokio::test]
    async fn says_the_daemon_is_not_running_then_connects_when_it_starts() {
        let dir = std::env::temp_dir().join(format!("nhiscope-client-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("live.sock");
        let (tx, mut rx) = mpsc::channel(16);
        let client = spawn(path.clone(), tx);

        let Update::Down {
            reason, attempt, ..
        } = next(&mut rx).await
        else {
            panic!("down first")
        };
        assert!(
            reason.starts_with("daemon not running: no socket at"),
            "{reason}"
        );
        assert_eq!(attempt, 1);
        let Update::Down { attempt, .. } = next(&mut rx).await else {
            panic!("still down")
        };
        assert_eq!(attempt, 2, "it keeps trying");

        let server = Server::bind(&path).unwrap();
        server.set_host("web-1");
        let started = Instant::now();
        loop {
            match next(&mut rx).await {
                Update::Connected => break,
                Update::Down { .. } => assert!(started.elapsed() < Duration::from_secs(5)),
                other => panic!("{other:?}"),
            }
        }
        let Update::Message(Message::Hello(hello)) = next(&mut rx).await else {
            panic!("hello")
        };
        assert_eq!(hello.host, "web-1");
        while server.clients() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.publish(&Event::new(Kind::Exec, Ts::default(), "web-1".into()));
        let Update::Message(Message::Event { event }) = next(&mut rx).await else {
            panic!("an event")
        };
        assert_eq!(event.kind, Kind::Exec);

        drop(server);
        let Update::Down { reason, .. } = next(&mut rx).await else {
            panic!("down again")
        };
        assert_eq!(reason, "the daemon closed the connection");
        client.abort();
    }

    #[test]
    fn reasons_say_what_to_do() {
        let p = Path::new("/run/nhiscope/live.sock");
        let r = unreachable_reason(p, &io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(r.contains("sudo nhiscope tui"), "{r}");
        let r = unreachable_reason(p, &io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(r.starts_with("daemon not running"), "{r}");
    }
}
