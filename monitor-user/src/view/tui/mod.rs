//! `nhiscope tui`: the terminal dashboard analysts watch, live from the daemon's socket and,
//! with `--clickhouse`, over the history of one host, some hosts or the whole fleet.
//!
//! - `app.rs`: the state (no I/O): the registry, per-NHI aggregates, the drift feed, the event
//!   stream, health, and what the analyst looks at; keys change it.
//! - `ui.rs` (and `ui/`): drawing, `impl Widget for &App`; one file per view.
//! - `input.rs`: keys and ticks on tasks of their own, feeding one channel.
//! - `client.rs`: the socket client, reconnecting with a backoff.
//! - `history.rs`: the ClickHouse reader, fetching a snapshot every `--refresh`.
//! - `filter.rs`: the `/` filter.
//!
//! The terminal is restored on every way out: a normal exit, an error, Ctrl-C (a key in raw
//! mode), SIGTERM/SIGHUP/SIGINT, and a panic (ratatui's init installs a hook that restores it
//! before the panic message is printed).

pub mod app;
pub mod client;
pub mod filter;
pub mod history;
pub mod input;
pub mod model;
pub mod ui;

use std::{
    io::{self, IsTerminal as _},
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use ratatui::DefaultTerminal;
use thiserror::Error;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use app::App;
use input::Input;

/// How often ages and the retry countdown move on.
const TICK: Duration = Duration::from_millis(250);
/// At most one redraw per this for data; keys redraw at once.
const FRAME: Duration = Duration::from_millis(50);
/// Updates applied per redraw at most, so keys stay responsive under a flood.
const BATCH: usize = 4096;

/// What `nhiscope tui` is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// The daemon's live socket.
    pub socket: PathBuf,
    /// Read the live socket (`false`: `--no-live`, history only).
    pub live: bool,
    /// History from ClickHouse, when configured.
    pub history: Option<history::Options>,
}

/// Newest drift events read from ClickHouse.
const HISTORY_DRIFT: u64 = app::DRIFT_CAP as u64;
/// Newest events read from ClickHouse.
const HISTORY_STREAM: u64 = app::STREAM_CAP as u64;
/// The history's window when ClickHouse is given without --since.
const DEFAULT_SINCE: Duration = Duration::from_secs(3600);

impl Options {
    /// The options of `nhiscope tui`'s flags; an error is bad input (exit code 2).
    pub fn from_args(a: crate::app::cli::TuiArgs) -> Result<Options, String> {
        let config = crate::publish::store::StoreConfig::load(
            a.clickhouse.clickhouse_config.as_deref(),
            a.clickhouse.clickhouse.as_deref(),
            None,
            &|k| std::env::var(k).ok(),
        )
        .map_err(|e| e.to_string())?;
        let history = match config {
            Some(config) => Some(history::Options {
                config,
                since: a.since.unwrap_or(DEFAULT_SINCE),
                hosts: a.hosts,
                refresh: a.refresh,
                drift_limit: HISTORY_DRIFT,
                stream_limit: HISTORY_STREAM,
            }),
            None => {
                let asked: Vec<&str> = [
                    (a.since.is_some(), "--since"),
                    (!a.hosts.is_empty(), "--host"),
                    (a.no_live, "--no-live"),
                ]
                .into_iter()
                .filter_map(|(set, flag)| set.then_some(flag))
                .collect();
                if !asked.is_empty() {
                    return Err(format!(
                        "{} read history from ClickHouse: give --clickhouse URL or \
                         --clickhouse-config FILE",
                        asked.join(", ")
                    ));
                }
                None
            }
        };
        Ok(Options {
            socket: a.socket,
            live: !a.no_live,
            history,
        })
    }
}

/// Why the dashboard stopped with an error.
#[derive(Debug, Error)]
pub enum TuiError {
    /// Standard output is not a terminal, or it could not be put in raw mode.
    #[error("nhiscope tui needs a terminal: {0}")]
    Terminal(io::Error),
    /// The runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(io::Error),
    /// Drawing failed (the terminal went away).
    #[error("drawing the dashboard: {0}")]
    Draw(io::Error),
    /// The terminal could not be read.
    #[error("reading the terminal: {0}")]
    Input(String),
    /// A signal handler could not be installed.
    #[error("installing a signal handler: {0}")]
    Signal(io::Error),
}

/// Restores the terminal when dropped, also on an early return.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the dashboard until the analyst quits.
pub fn run(opts: Options) -> Result<(), TuiError> {
    if !io::stdout().is_terminal() {
        return Err(TuiError::Terminal(io::Error::other(
            "standard output is not a terminal",
        )));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(TuiError::Runtime)?;
    let result = {
        let mut terminal = ratatui::try_init().map_err(TuiError::Terminal)?;
        let _restore = Restore;
        rt.block_on(main_loop(&mut terminal, &opts))
    };
    // The terminal reader notices within its poll interval that the loop is gone.
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

async fn main_loop(terminal: &mut DefaultTerminal, opts: &Options) -> Result<(), TuiError> {
    let (input_tx, mut inputs) = mpsc::channel(256);
    let _reader = input::spawn_terminal(input_tx.clone());
    let ticker = input::spawn_ticks(input_tx, TICK);
    let (update_tx, mut updates) = mpsc::channel(BATCH);
    let history = opts
        .history
        .clone()
        .map(|h| history::spawn(h, update_tx.clone()));
    let client = opts
        .live
        .then(|| client::spawn(opts.socket.clone(), update_tx));
    let mut term = signal(SignalKind::terminate()).map_err(TuiError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(TuiError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(TuiError::Signal)?;

    let mut app = App::new(&opts.socket.display().to_string(), SystemTime::now());
    if let Some(h) = &opts.history {
        app = app.with_history(app::History::new(h.since, h.hosts.clone()));
    }
    if !opts.live {
        app = app.without_live();
    }
    let mut draw = |app: &App| {
        terminal
            .draw(|f| f.render_widget(app, f.area()))
            .map(drop)
            .map_err(TuiError::Draw)
    };
    draw(&app)?;
    let mut dirty = false;
    let mut last_draw = Instant::now();
    let result = loop {
        let mut now_please = false;
        tokio::select! {
            Some(i) = inputs.recv() => match i {
                Input::Key(k) => {
                    app.on_key(k);
                    now_please = true;
                }
                Input::Resize => now_please = true,
                Input::Tick => {
                    app.tick(SystemTime::now());
                    dirty = true;
                }
                Input::Failed(e) => break Err(TuiError::Input(e)),
            },
            Some(u) = updates.recv() => {
                app.on_update(u);
                for _ in 1..BATCH {
                    match updates.try_recv() {
                        Ok(u) => app.on_update(u),
                        Err(_) => break,
                    }
                }
                dirty = true;
            }
            _ = term.recv() => app.quit = true,
            _ = hup.recv() => app.quit = true,
            _ = int.recv() => app.quit = true,
        }
        if app.quit {
            break Ok(());
        }
        if now_please || (dirty && last_draw.elapsed() >= FRAME) {
            if let Err(e) = draw(&app) {
                break Err(e);
            }
            dirty = false;
            last_draw = Instant::now();
        }
    };
    for task in [client, history].into_iter().flatten() {
        task.abort();
    }
    ticker.abort();
    result
}
