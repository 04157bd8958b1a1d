//! The dashboard's state: what the daemon said (registry, events, health), what the analyst is
//! looking at (view, selection, filter, pause), and the per-NHI aggregates the views draw.
//!
//! No I/O and no clock of its own: the main loop feeds it [`Update`]s from the socket client,
//! keys from the input task and the time on each tick, so that tests drive it exactly.

use std::{
    cell::Cell,
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    time::{Duration, SystemTime},
};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::{
    filter::Filter,
    model::{HostSummary, NhiRow, Snapshot, Stats, Subject, Update},
};
use crate::{
    domain::event::{Event, Kind, Ts, Verdict},
    publish::live::protocol::{Health, Message, NhiSummary, PROTOCOL_VERSION},
};

/// Drift lines kept in the feed.
pub const DRIFT_CAP: usize = 2_000;
/// Events kept in the stream.
pub const STREAM_CAP: usize = 5_000;
/// Events held back while paused.
pub const HELD_CAP: usize = 10_000;
/// How far the detail view scrolls.
const MAX_DETAIL_SCROLL: isize = 40;
/// Points of the events/s history on the health view.
const RATE_HISTORY: usize = 120;
/// Live events kept until a history snapshot counts them.
pub const PENDING_CAP: usize = 100_000;

/// The screens, in tab order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Overview,
    Drift,
    Stream,
    Detail,
    Health,
}

impl View {
    pub const ALL: [View; 5] = [
        View::Overview,
        View::Drift,
        View::Stream,
        View::Detail,
        View::Health,
    ];

    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Drift => "Drift",
            View::Stream => "Stream",
            View::Detail => "Detail",
            View::Health => "Health",
        }
    }

    pub fn index(self) -> usize {
        match self {
            View::Overview => 0,
            View::Drift => 1,
            View::Stream => 2,
            View::Detail => 3,
            View::Health => 4,
        }
    }
}

/// The connection to the daemon.
#[derive(Clone, Debug, PartialEq)]
pub enum Conn {
    /// The live feed is not read (`--no-live`): history only.
    Off,
    /// The first attempt is under way.
    Connecting,
    /// Reading the feed.
    Live,
    /// Not connected: why, which attempt failed, and when the next one is.
    Down {
        reason: String,
        attempt: u32,
        retry_in: Duration,
    },
}

/// Where the history from ClickHouse stands.
#[derive(Clone, Debug, PartialEq)]
pub enum HistoryState {
    /// The first fetch is under way.
    Loading,
    /// The last fetch worked.
    Ok,
    /// The last fetch failed: why, which attempt, and when the next one is.
    Down {
        reason: String,
        attempt: u32,
        retry_in: Duration,
    },
}

/// The history from ClickHouse, when the dashboard shows one (`--since`, `--host`).
#[derive(Clone, Debug)]
pub struct History {
    /// How far back.
    pub since: Duration,
    /// Only these hosts; empty: the whole fleet.
    pub hosts: Vec<String>,
    pub state: HistoryState,
    /// When the snapshot shown was fetched.
    pub loaded_at: Option<SystemTime>,
    /// The snapshot had more use rows than it reads: rare uses are missing from the counts.
    pub truncated: bool,
    /// The fleet as the snapshot saw it.
    pub fleet: Vec<HostSummary>,
    /// Per host, the newest use the snapshot counted (ns since the epoch).
    watermarks: HashMap<String, u64>,
    /// Live events the snapshot did not count yet, oldest first.
    pending: VecDeque<Event>,
}

impl History {
    pub fn new(since: Duration, hosts: Vec<String>) -> Self {
        Self {
            since,
            hosts,
            state: HistoryState::Loading,
            loaded_at: None,
            truncated: false,
            fleet: Vec::new(),
            watermarks: HashMap::new(),
            pending: VecDeque::new(),
        }
    }

    /// The event is from a host this history leaves out.
    fn excludes(&self, e: &Event) -> bool {
        !self.hosts.is_empty() && !self.hosts.iter().any(|h| **h == *e.host)
    }

    /// The snapshot already counted the event: ClickHouse stores a host's events in order, so
    /// everything up to the newest stored use of its host is in.
    fn covers(&self, e: &Event) -> bool {
        self.watermarks
            .get(&*e.host)
            .is_some_and(|w| e.ts.as_nanos() <= *w)
    }

    /// Live events waiting for a snapshot to count them.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// What tells two copies of one event apart from other events: host, time, pid and kind.
fn event_key(e: &Event) -> (String, Ts, u32, Kind) {
    (e.host.to_string(), e.ts, e.pid, e.kind)
}

/// When `e` happened: its time, or `now` when it carries none.
fn happened(e: &Event, now: SystemTime) -> SystemTime {
    if e.ts == Ts::default() {
        now
    } else {
        e.ts.to_system()
    }
}

/// `a` and `b` (each newest first) as one list, newest first, each event once, at most `cap`.
fn merge_newest(a: Vec<Event>, b: Vec<Event>, cap: usize) -> VecDeque<Event> {
    let mut all: Vec<(u64, Event)> = a
        .into_iter()
        .chain(b)
        .map(|e| (e.ts.as_nanos(), e))
        .collect();
    all.sort_by_key(|x| std::cmp::Reverse(x.0));
    let mut seen = HashSet::new();
    all.into_iter()
        .map(|(_, e)| e)
        .filter(|e| seen.insert(event_key(e)))
        .take(cap)
        .collect()
}

/// Dashboard-side counters, for the health view.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    pub messages: u64,
    pub events: u64,
    pub garbled: u64,
    pub connects: u64,
    /// Kernel records lost, from `loss` events.
    pub lost: u64,
}

/// The lists that have a selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    Overview = 0,
    Drift = 1,
    Stream = 2,
}

/// Everything the dashboard shows.
#[derive(Debug)]
pub struct App {
    /// The socket, as the user named it.
    pub socket: String,
    pub conn: Conn,
    /// A hello has been seen: the views hold data worth showing even while disconnected.
    pub ever_connected: bool,
    /// When the last connection ended.
    pub lost_at: Option<SystemTime>,
    /// Why the daemon closed the connection, when it said.
    pub server_error: Option<String>,
    pub host: String,
    pub daemon_pid: u32,
    pub registry: Vec<NhiSummary>,
    pub stats: BTreeMap<Subject, Stats>,
    /// Drift events, newest first.
    pub drifts: VecDeque<Event>,
    /// Every event, newest first.
    pub stream: VecDeque<Event>,
    /// Events that arrived while paused, oldest first.
    pub held: VecDeque<Event>,
    pub health: Option<Health>,
    /// Events per second from the health messages, oldest first.
    pub rate_history: VecDeque<u64>,
    pub counters: Counters,
    pub view: View,
    /// Where Esc goes back to from the detail view.
    back: View,
    /// The NHI the detail view shows.
    pub detail: Option<Subject>,
    pub detail_scroll: u16,
    /// Selected row of each list, in its filtered order.
    pub selected: [usize; 3],
    /// First visible row of each list: kept by the drawing code so that the view scrolls
    /// smoothly (it draws from `&App`).
    pub offsets: [Cell<usize>; 3],
    pub filter: Filter,
    /// The filter line is being edited.
    pub editing: bool,
    filter_before_edit: String,
    pub paused: bool,
    pub help: bool,
    pub quit: bool,
    pub now: SystemTime,
    /// The history from ClickHouse, when asked for.
    pub history: Option<History>,
}

impl App {
    pub fn new(socket: &str, now: SystemTime) -> Self {
        Self {
            socket: socket.to_owned(),
            conn: Conn::Connecting,
            ever_connected: false,
            lost_at: None,
            server_error: None,
            host: String::new(),
            daemon_pid: 0,
            registry: Vec::new(),
            stats: BTreeMap::new(),
            drifts: VecDeque::new(),
            stream: VecDeque::new(),
            held: VecDeque::new(),
            health: None,
            rate_history: VecDeque::new(),
            counters: Counters::default(),
            view: View::Overview,
            back: View::Overview,
            detail: None,
            detail_scroll: 0,
            selected: [0; 3],
            offsets: Default::default(),
            filter: Filter::default(),
            editing: false,
            filter_before_edit: String::new(),
            paused: false,
            help: false,
            quit: false,
            now,
            history: None,
        }
    }

    /// The same dashboard showing history from ClickHouse too.
    pub fn with_history(mut self, history: History) -> Self {
        self.history = Some(history);
        self
    }

    /// The same dashboard without the live feed (history only).
    pub fn without_live(mut self) -> Self {
        self.conn = Conn::Off;
        self
    }

    /// There is something to show: the daemon said hello once, or history arrived.
    pub fn has_data(&self) -> bool {
        self.ever_connected || self.history.as_ref().is_some_and(|h| h.loaded_at.is_some())
    }

    /// The clock moved on (ages and sparklines depend on it).
    pub fn tick(&mut self, now: SystemTime) {
        self.now = now;
    }

    pub fn on_update(&mut self, u: Update) {
        match u {
            Update::Connected => {
                self.counters.connects += 1;
                self.server_error = None;
            }
            Update::Down {
                reason,
                attempt,
                retry_in,
            } => {
                if self.conn == Conn::Live {
                    self.lost_at = Some(self.now);
                }
                let reason = match self.server_error.take() {
                    Some(said) => format!("the daemon closed the connection: {said}"),
                    None => reason,
                };
                self.conn = Conn::Down {
                    reason,
                    attempt,
                    retry_in,
                };
            }
            Update::Garbled(_) => self.counters.garbled += 1,
            Update::Message(m) => {
                self.counters.messages += 1;
                self.on_message(m);
            }
            Update::History(snapshot) => self.on_history(*snapshot),
            Update::HistoryDown {
                reason,
                attempt,
                retry_in,
            } => {
                if let Some(h) = &mut self.history {
                    h.state = HistoryState::Down {
                        reason,
                        attempt,
                        retry_in,
                    };
                }
            }
        }
    }

    /// A new snapshot: the counts become the snapshot's plus the live events it did not count
    /// yet; the drift feed and the stream become its newest events and those live ones.
    fn on_history(&mut self, snap: Snapshot) {
        let Some(h) = &mut self.history else {
            return;
        };
        h.state = HistoryState::Ok;
        h.loaded_at = Some(snap.at);
        h.truncated = snap.truncated;
        h.fleet = snap.hosts;
        h.watermarks = snap.watermarks;
        // Stored: up to the newest stored use of its host, or listed in the snapshot (an exec
        // after the last use, say).
        let listed: HashSet<_> = snap
            .stream
            .iter()
            .chain(&snap.drifts)
            .map(event_key)
            .collect();
        let pending = std::mem::take(&mut h.pending);
        h.pending = pending
            .into_iter()
            .filter(|e| !h.covers(e) && !listed.contains(&event_key(e)))
            .collect();
        let mut stats = snap.stats;
        for e in &h.pending {
            if let Some(subject) = Subject::of(e) {
                let at = happened(e, self.now);
                stats.entry(subject).or_default().record(e, at);
            }
        }
        self.stats = stats;
        if self.paused {
            // The lists stay as the analyst froze them; the counts go on.
            return;
        }
        let live: Vec<Event> = h.pending.iter().rev().cloned().collect();
        let live_drift: Vec<Event> = live
            .iter()
            .filter(|e| e.verdict == Verdict::Drift)
            .cloned()
            .collect();
        let kept_drift = self.selected_key(List::Drift);
        let kept_stream = self.selected_key(List::Stream);
        self.drifts = merge_newest(live_drift, snap.drifts, DRIFT_CAP);
        self.stream = merge_newest(live, snap.stream, STREAM_CAP);
        self.reselect(List::Drift, kept_drift);
        self.reselect(List::Stream, kept_stream);
    }

    /// The event selected in `list`, when the selection is below the top (at the top it
    /// follows the newest).
    fn selected_key(&self, list: List) -> Option<(String, Ts, u32, Kind)> {
        let items = match list {
            List::Drift => self.drift_items(),
            List::Stream => self.stream_items(),
            List::Overview => return None,
        };
        let i = self.selection(list, items.len());
        (i > 0)
            .then(|| items.get(i).map(|e| event_key(e)))
            .flatten()
    }

    /// Puts the selection of `list` back on the event `key`, wherever it is now.
    fn reselect(&mut self, list: List, key: Option<(String, Ts, u32, Kind)>) {
        let Some(key) = key else { return };
        let items = match list {
            List::Drift => self.drift_items(),
            List::Stream => self.stream_items(),
            List::Overview => return,
        };
        if let Some(i) = items.iter().position(|e| event_key(e) == key) {
            self.selected[list as usize] = i;
        }
    }

    fn on_message(&mut self, m: Message) {
        match m {
            Message::Hello(h) => {
                self.conn = Conn::Live;
                self.ever_connected = true;
                self.lost_at = None;
                if h.version != PROTOCOL_VERSION {
                    self.server_error = Some(format!(
                        "the daemon speaks live protocol {}, this dashboard {PROTOCOL_VERSION}",
                        h.version
                    ));
                }
                self.host = h.host;
                self.daemon_pid = h.pid;
                self.registry = h.registry.nhis;
                self.on_health(h.health);
            }
            Message::Event { event } => self.on_event(*event),
            Message::Health { health } => self.on_health(*health),
            Message::Registry { registry } => self.registry = registry.nhis,
            Message::Error { message } => self.server_error = Some(message),
        }
    }

    fn on_health(&mut self, h: Health) {
        if self.rate_history.len() == RATE_HISTORY {
            self.rate_history.pop_front();
        }
        self.rate_history.push_back(h.events_per_sec.round() as u64);
        self.health = Some(h);
    }

    /// One event from the daemon: aggregates always, the lists unless paused. With history,
    /// an event of a host left out is not shown, and one a snapshot already counted is not
    /// counted again.
    pub fn on_event(&mut self, e: Event) {
        self.counters.events += 1;
        if let Some(h) = &mut self.history {
            if h.excludes(&e) || h.covers(&e) {
                return;
            }
            if h.pending.len() == PENDING_CAP {
                h.pending.pop_front();
            }
            h.pending.push_back(e.clone());
        }
        if e.kind == Kind::Loss {
            self.counters.lost += e.count.unwrap_or(0);
        }
        if let Some(subject) = Subject::of(&e) {
            let at = happened(&e, self.now);
            self.stats.entry(subject).or_default().record(&e, at);
        }
        if self.paused {
            if self.held.len() == HELD_CAP {
                self.held.pop_front();
            }
            self.held.push_back(e);
        } else {
            self.push_front(e);
        }
    }

    fn push_front(&mut self, e: Event) {
        // A selection below the top stays on its event; at the top it follows the newest.
        let shown = self.filter.matches_event(&e);
        let mut keep = |list: List| {
            let i = list as usize;
            if shown && self.selected[i] > 0 {
                self.selected[i] += 1;
                self.offsets[i].set(self.offsets[i].get() + 1);
            }
        };
        if e.verdict == Verdict::Drift {
            keep(List::Drift);
            self.drifts.push_front(e.clone());
            self.drifts.truncate(DRIFT_CAP);
        }
        keep(List::Stream);
        self.stream.push_front(e);
        self.stream.truncate(STREAM_CAP);
    }

    fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
        if !paused {
            for e in std::mem::take(&mut self.held) {
                self.push_front(e);
            }
        }
    }

    /// The overview's rows, filtered: registry order, then NHIs seen only in events, then the
    /// unregistered credentials.
    pub fn rows(&self) -> Vec<NhiRow<'_>> {
        let mut rows: Vec<NhiRow<'_>> = self
            .registry
            .iter()
            .map(|d| {
                let subject = Subject::Nhi(d.id.clone());
                NhiRow {
                    stats: self.stats.get(&subject),
                    subject,
                    declared: Some(d),
                }
            })
            .collect();
        for (subject, stats) in &self.stats {
            let listed = match subject {
                Subject::Nhi(id) => self.registry.iter().any(|d| d.id == *id),
                Subject::Unregistered => false,
            };
            if !listed {
                rows.push(NhiRow {
                    subject: subject.clone(),
                    declared: None,
                    stats: Some(stats),
                });
            }
        }
        // `Unregistered` sorts after every NHI in the map; keep it last after the registry too.
        rows.sort_by_key(|r| r.subject == Subject::Unregistered);
        rows.retain(|r| self.filter.matches_row(r));
        rows
    }

    /// The drift feed, filtered, newest first.
    pub fn drift_items(&self) -> Vec<&Event> {
        self.drifts
            .iter()
            .filter(|e| self.filter.matches_event(e))
            .collect()
    }

    /// The event stream, filtered, newest first.
    pub fn stream_items(&self) -> Vec<&Event> {
        self.stream
            .iter()
            .filter(|e| self.filter.matches_event(e))
            .collect()
    }

    /// NHIs known: registered, or named by uses (other hosts' NHIs in a fleet's history).
    pub fn nhi_count(&self) -> usize {
        let mut ids: BTreeSet<&str> = self.registry.iter().map(|d| d.id.as_str()).collect();
        for subject in self.stats.keys() {
            if let Subject::Nhi(id) = subject {
                ids.insert(id);
            }
        }
        ids.len()
    }

    /// Total drift events seen.
    pub fn drift_total(&self) -> u64 {
        self.stats.values().map(|s| s.drifts).sum()
    }

    /// The row the detail view shows: the one chosen with Enter, else the overview's selection.
    pub fn detail_subject(&self) -> Option<Subject> {
        self.detail.clone().or_else(|| {
            self.rows()
                .get(self.selected[List::Overview as usize])
                .map(|r| r.subject.clone())
        })
    }

    pub fn declared(&self, subject: &Subject) -> Option<&NhiSummary> {
        match subject {
            Subject::Nhi(id) => self.registry.iter().find(|d| d.id == *id),
            Subject::Unregistered => None,
        }
    }

    fn list_len(&self, list: List) -> usize {
        match list {
            List::Overview => self.rows().len(),
            List::Drift => self.drift_items().len(),
            List::Stream => self.stream_items().len(),
        }
    }

    fn current_list(&self) -> Option<List> {
        match self.view {
            View::Overview => Some(List::Overview),
            View::Drift => Some(List::Drift),
            View::Stream => Some(List::Stream),
            View::Detail | View::Health => None,
        }
    }

    /// The selection of `list`, within its current length.
    pub fn selection(&self, list: List, len: usize) -> usize {
        self.selected[list as usize].min(len.saturating_sub(1))
    }

    fn move_by(&mut self, delta: isize) {
        if self.view == View::Detail {
            // The detail's lists are short (a few sections of at most 8 entries).
            let scroll = (self.detail_scroll as isize).saturating_add(delta);
            self.detail_scroll = scroll.clamp(0, MAX_DETAIL_SCROLL) as u16;
            return;
        }
        let Some(list) = self.current_list() else {
            return;
        };
        let len = self.list_len(list);
        let cur = self.selection(list, len);
        let next = cur.saturating_add_signed(delta).min(len.saturating_sub(1));
        self.selected[list as usize] = next;
    }

    fn switch(&mut self, view: View) {
        if view == View::Detail && self.view != View::Detail {
            self.back = self.view;
            self.detail = self.detail_subject();
            self.detail_scroll = 0;
        }
        self.view = view;
    }

    /// Enter: the detail of what is selected.
    fn open_detail(&mut self) {
        let subject = match self.view {
            View::Overview => {
                let rows = self.rows();
                let i = self.selection(List::Overview, rows.len());
                rows.get(i).map(|r| r.subject.clone())
            }
            View::Drift | View::Stream => {
                let list = self.current_list().unwrap_or(List::Drift);
                let items = if list == List::Drift {
                    self.drift_items()
                } else {
                    self.stream_items()
                };
                let i = self.selection(list, items.len());
                items.get(i).and_then(|e| Subject::of(e))
            }
            View::Detail | View::Health => return,
        };
        if let Some(s) = subject {
            self.back = self.view;
            self.detail = Some(s);
            self.detail_scroll = 0;
            self.view = View::Detail;
        }
    }

    /// One key press.
    pub fn on_key(&mut self, k: KeyEvent) {
        if k.kind != KeyEventKind::Press {
            return;
        }
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if self.help {
            self.help = false;
            return;
        }
        if self.editing {
            self.edit_filter(k);
            return;
        }
        match k.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Esc => {
                if self.view == View::Detail {
                    self.view = self.back;
                } else if !self.filter.is_empty() {
                    self.filter = Filter::default();
                } else {
                    self.quit = true;
                }
            }
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('/') => {
                self.editing = true;
                self.filter_before_edit = self.filter.text().to_owned();
            }
            KeyCode::Char('p') | KeyCode::Char(' ') => self.set_paused(!self.paused),
            KeyCode::Char(c @ '1'..='5') => {
                let i = c as usize - '1' as usize;
                self.switch(View::ALL[i]);
            }
            KeyCode::Tab => self.switch(View::ALL[(self.view.index() + 1) % View::ALL.len()]),
            KeyCode::BackTab => {
                let n = View::ALL.len();
                self.switch(View::ALL[(self.view.index() + n - 1) % n]);
            }
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::PageUp => self.move_by(-10),
            KeyCode::PageDown => self.move_by(10),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_by(isize::MAX / 2),
            KeyCode::Enter => self.open_detail(),
            KeyCode::Backspace | KeyCode::Left if self.view == View::Detail => {
                self.view = self.back;
            }
            _ => {}
        }
    }

    fn edit_filter(&mut self, k: KeyEvent) {
        let mut text = self.filter.text().to_owned();
        match k.code {
            KeyCode::Enter => {
                self.editing = false;
                return;
            }
            KeyCode::Esc => {
                self.editing = false;
                text = std::mem::take(&mut self.filter_before_edit);
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char('u') if k.modifiers.contains(KeyModifiers::CONTROL) => text.clear(),
            KeyCode::Char(c) => text.push(c),
            _ => return,
        }
        self.filter = Filter::parse(&text);
        self.selected = [0; 3];
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::{
        domain::event::DriftKind,
        publish::live::protocol::{Hello, RegistrySummary},
        view::tui::model::Status,
    };

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn ts(secs: u64) -> Ts {
        Ts::from_system(at(secs))
    }

    fn open(nhi: &str, exe: &str, uid: u32, secs: u64, drift: &[DriftKind]) -> Event {
        let mut e = Event::bare(
            Kind::Open,
            if drift.is_empty() {
                Verdict::Ok
            } else {
                Verdict::Drift
            },
        );
        e.ts = ts(secs);
        e.nhi = Some(nhi.into());
        e.exe = exe.into();
        e.uid = uid;
        e.path = Some("/etc/key".into());
        e.drift = drift.to_vec();
        e
    }

    fn app_with(nhis: &[&str]) -> App {
        let mut app = App::new("/run/nhiscope/live.sock", at(1_000_000));
        app.on_update(Update::Connected);
        app.on_update(Update::Message(Message::Hello(Box::new(Hello {
            version: PROTOCOL_VERSION,
            host: "web-1".into(),
            pid: 1,
            registry: RegistrySummary {
                nhis: nhis
                    .iter()
                    .map(|id| NhiSummary {
                        id: (*id).into(),
                        ..NhiSummary::default()
                    })
                    .collect(),
            },
            health: Health::default(),
        }))));
        app
    }

    #[test]
    fn aggregates_mark_readers_and_endpoints_outside_the_scope() {
        let mut app = app_with(&["a", "b"]);
        app.on_event(open("a", "/usr/bin/cat", 0, 1_000_000, &[]));
        app.on_event(open(
            "a",
            "/usr/bin/cat",
            65534,
            1_000_001,
            &[DriftKind::ReaderOutOfScope],
        ));
        let mut c = Event::bare(Kind::Connect, Verdict::Drift);
        c.nhi = Some("a".into());
        c.daddr = Some("127.0.0.9".parse().unwrap());
        c.dport = Some(443);
        c.drift = vec![DriftKind::EndpointOutOfScope];
        c.ts = ts(1_000_002);
        app.on_event(c);
        let s = &app.stats[&Subject::Nhi("a".into())];
        assert_eq!((s.reads, s.connections, s.drifts), (2, 1, 2));
        assert!(!s.readers[&("/usr/bin/cat".to_owned(), 0)].outside);
        assert!(s.readers[&("/usr/bin/cat".to_owned(), 65534)].outside);
        assert!(s.endpoints["127.0.0.9:443"].outside);
        assert_eq!(s.last_seen, Some(at(1_000_002)));
        assert_eq!(s.series(at(1_000_005), 3), [0, 0, 3]);
        let rows = app.rows();
        assert_eq!(rows[0].status(), Status::Drift);
        assert_eq!(rows[1].status(), Status::Idle);
        assert_eq!(app.drift_items().len(), 2);
        assert_eq!(app.drift_total(), 2);
    }

    #[test]
    fn unregistered_and_unknown_nhis_get_rows_after_the_registry() {
        let mut app = app_with(&["z"]);
        let mut e = Event::bare(Kind::Open, Verdict::Unregistered);
        e.path = Some("/root/.aws/credentials".into());
        app.on_event(e);
        app.on_event(open("gone", "/bin/cat", 0, 1_000_000, &[]));
        let names: Vec<_> = app
            .rows()
            .iter()
            .map(|r| r.subject.name().to_owned())
            .collect();
        assert_eq!(names, ["z", "gone", "(unregistered)"]);
        assert_eq!(app.rows()[2].status(), Status::Unregistered);
    }

    #[test]
    fn pause_holds_the_lists_but_not_the_counts() {
        let mut app = app_with(&["a"]);
        app.on_key(key(KeyCode::Char('p')));
        app.on_event(open(
            "a",
            "/bin/cat",
            1,
            1_000_000,
            &[DriftKind::ReaderOutOfScope],
        ));
        assert!(app.drifts.is_empty() && app.stream.is_empty());
        assert_eq!(app.held.len(), 1);
        assert_eq!(app.drift_total(), 1);
        app.on_key(key(KeyCode::Char('p')));
        assert_eq!(app.drifts.len(), 1);
        assert!(app.held.is_empty());
    }

    #[test]
    fn the_selection_stays_on_its_event_as_new_ones_arrive() {
        let mut app = app_with(&["a"]);
        for i in 0..3 {
            app.on_event(open(
                "a",
                "/bin/cat",
                i,
                1_000_000,
                &[DriftKind::ReaderOutOfScope],
            ));
        }
        app.on_key(key(KeyCode::Char('2')));
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.drift_items()[app.selected[1]].uid, 1);
        app.on_event(open(
            "a",
            "/bin/cat",
            9,
            1_000_000,
            &[DriftKind::ReaderOutOfScope],
        ));
        assert_eq!(app.drift_items()[app.selected[1]].uid, 1);
        // At the top, the selection follows the newest.
        app.on_key(key(KeyCode::Home));
        app.on_event(open(
            "a",
            "/bin/cat",
            7,
            1_000_000,
            &[DriftKind::ReaderOutOfScope],
        ));
        assert_eq!(app.drift_items()[app.selected[1]].uid, 7);
    }

    #[test]
    fn keys_switch_views_open_detail_and_quit() {
        let mut app = app_with(&["a", "b"]);
        app.on_key(key(KeyCode::Down));
        app.on_key(key(KeyCode::Enter));
        assert_eq!(app.view, View::Detail);
        assert_eq!(app.detail, Some(Subject::Nhi("b".into())));
        app.on_key(key(KeyCode::End));
        assert_eq!(app.detail_scroll, MAX_DETAIL_SCROLL as u16);
        app.on_key(key(KeyCode::Home));
        assert_eq!(app.detail_scroll, 0);
        app.on_key(key(KeyCode::Esc));
        assert_eq!(app.view, View::Overview);
        app.on_key(key(KeyCode::Tab));
        assert_eq!(app.view, View::Drift);
        app.on_key(key(KeyCode::BackTab));
        app.on_key(key(KeyCode::BackTab));
        assert_eq!(app.view, View::Health);
        app.on_key(key(KeyCode::Char('?')));
        assert!(app.help);
        app.on_key(key(KeyCode::Char('q')));
        assert!(!app.help && !app.quit, "a key closes the help first");
        app.on_key(key(KeyCode::Char('q')));
        assert!(app.quit);

        let mut app = app_with(&[]);
        app.on_key(key(KeyCode::Esc));
        assert!(app.quit, "Esc at the top quits");
        let mut app = app_with(&[]);
        app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert!(app.quit);
    }

    #[test]
    fn the_filter_is_edited_live_and_esc_restores_it() {
        let mut app = app_with(&["billing", "deploy"]);
        app.on_key(key(KeyCode::Char('/')));
        for c in "bill".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert_eq!(app.rows().len(), 1);
        app.on_key(key(KeyCode::Enter));
        assert!(!app.editing);
        assert_eq!(app.filter.text(), "bill");
        app.on_key(key(KeyCode::Char('/')));
        app.on_key(key(KeyCode::Backspace));
        assert_eq!(app.filter.text(), "bil");
        app.on_key(key(KeyCode::Esc));
        assert_eq!(app.filter.text(), "bill");
        // Esc outside the editor clears the filter before it quits.
        app.on_key(key(KeyCode::Esc));
        assert!(app.filter.is_empty() && !app.quit);
    }

    #[test]
    fn a_lost_connection_keeps_the_data_and_says_why() {
        let mut app = app_with(&["a"]);
        app.on_update(Update::Message(Message::Error {
            message: "refused".into(),
        }));
        app.on_update(Update::Down {
            reason: "the daemon closed the connection".into(),
            attempt: 1,
            retry_in: Duration::from_secs(1),
        });
        let Conn::Down { reason, .. } = &app.conn else {
            panic!("down")
        };
        assert!(reason.contains("refused"), "{reason}");
        assert_eq!(app.lost_at, Some(app.now));
        assert_eq!(app.registry.len(), 1);
    }
}
