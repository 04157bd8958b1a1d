//! Keys, resizes and ticks, each on a task of its own feeding one channel that the main loop
//! reads: the loop never blocks on the terminal, and a redraw is never late for a key.

use std::time::Duration;

use ratatui::crossterm::event::{self, Event as TermEvent, KeyEvent};
use tokio::{sync::mpsc, task::JoinHandle};

/// How often the terminal is polled, which is also how soon the reader notices the dashboard
/// has quit.
const POLL: Duration = Duration::from_millis(100);

/// What the main loop is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Key(KeyEvent),
    /// The terminal was resized: redraw.
    Resize,
    /// Time passed: ages, sparklines and the retry countdown move on.
    Tick,
    /// The terminal cannot be read any more.
    Failed(String),
}

/// Reads the terminal on a blocking task (crossterm's reader blocks); ends when `tx` closes.
pub fn spawn_terminal(tx: mpsc::Sender<Input>) -> JoinHandle<()> {
    tokio::task::spawn_blocking(move || loop {
        if tx.is_closed() {
            return;
        }
        let input = match event::poll(POLL) {
            Ok(false) => continue,
            Ok(true) => match event::read() {
                Ok(TermEvent::Key(k)) => Input::Key(k),
                Ok(TermEvent::Resize(..)) => Input::Resize,
                Ok(_) => continue,
                Err(e) => Input::Failed(e.to_string()),
            },
            Err(e) => Input::Failed(e.to_string()),
        };
        let failed = matches!(input, Input::Failed(_));
        if tx.blocking_send(input).is_err() || failed {
            return;
        }
    })
}

/// Sends a tick every `every`; a tick the loop has no room for is skipped, not queued.
pub fn spawn_ticks(tx: mpsc::Sender<Input>, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            match tx.try_send(Input::Tick) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_come_until_the_loop_is_gone() {
        let (tx, mut rx) = mpsc::channel(1);
        let ticker = spawn_ticks(tx, Duration::from_millis(5));
        for _ in 0..3 {
            assert_eq!(rx.recv().await, Some(Input::Tick));
        }
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), ticker)
            .await
            .expect("the ticker ends once nobody listens")
            .expect("no panic");
    }
}
