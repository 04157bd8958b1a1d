//! Drawing: `impl Widget for &App`. The frame (header, tabs, footer, help, the disconnected
//! banner) is here; each view has a file in `ui/`.
//!
//! Colour is never the only signal: drift is written `DRIFT`, out-of-scope readers and
//! endpoints `OUT`, the selected row carries `▶`, the current tab brackets.

mod detail;
mod events;
mod health;
mod overview;

use std::time::{Duration, SystemTime};

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Clear, Paragraph, Widget, Wrap},
};

use super::{
    app::{App, Conn, History, HistoryState, View},
    model::Status,
};
use crate::domain::event::{DriftKind, Event};

/// Below this the dashboard asks for a larger terminal instead of drawing garbage.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 12;

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            Paragraph::new(format!(
                "nhiscope: the terminal is {}x{}; the dashboard needs {MIN_WIDTH}x{MIN_HEIGHT}.",
                area.width, area.height
            ))
            .wrap(Wrap { trim: true })
            .render(area, buf);
            return;
        }
        let [header, tabs, body, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(area);
        render_header(self, header, buf);
        render_tabs(self, tabs, buf);
        render_footer(self, footer, buf);
        if !self.has_data() {
            render_not_connected(self, body, buf);
        } else {
            let lines = banner(self);
            let body = if lines.is_empty() {
                body
            } else {
                let [top, rest] =
                    Layout::vertical([Constraint::Length(lines.len() as u16), Constraint::Fill(1)])
                        .areas(body);
                Paragraph::new(lines).render(top, buf);
                rest
            };
            match self.view {
                View::Overview => overview::render(self, body, buf),
                View::Drift => events::render_drift(self, body, buf),
                View::Stream => events::render_stream(self, body, buf),
                View::Detail => detail::render(self, body, buf),
                View::Health => health::render(self, body, buf),
            }
        }
        if self.help {
            render_help(area, buf);
        }
    }
}

/// What is not working while data is shown: the live feed, ClickHouse.
fn banner(app: &App) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if let Conn::Down {
        reason,
        attempt,
        retry_in,
    } = &app.conn
    {
        let since = match app.lost_at {
            Some(t) => format!("showing data as of {} · ", hms(t)),
            None if app.history.is_some() => "showing history only · ".to_owned(),
            None => String::new(),
        };
        lines.push(Line::from(vec![
            Span::styled("DISCONNECTED ", alert()),
            Span::raw(reason.clone()),
        ]));
        lines.push(Line::from(format!(
            "{since}retrying in {} (attempt {attempt})",
            secs(*retry_in)
        )));
    }
    if let Some(HistoryState::Down {
        reason,
        attempt,
        retry_in,
    }) = app.history.as_ref().map(|h| &h.state)
    {
        lines.push(Line::from(vec![
            Span::styled("HISTORY UNAVAILABLE ", alert()),
            Span::raw(reason.clone()),
        ]));
        let shown = match app.history.as_ref().and_then(|h| h.loaded_at) {
            Some(t) => format!("history as of {} · ", hms(t)),
            None => String::new(),
        };
        lines.push(Line::from(format!(
            "{shown}retrying in {} (attempt {attempt})",
            secs(*retry_in)
        )));
    }
    lines
}

/// `24h · all hosts`, `24h · 3 hosts`, `1h · web-1, web-2`.
pub fn history_scope(h: &History) -> String {
    let hosts = match (h.hosts.is_empty(), h.fleet.len()) {
        (false, _) => h.hosts.join(", "),
        (true, 0) => "all hosts".to_owned(),
        (true, 1) => "1 host".to_owned(),
        (true, n) => format!("{n} hosts"),
    };
    format!("{} · {hosts}", span(h.since))
}

/// `7d`, `24h`, `90m`, `45s`: a window as it was most likely written.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s > 0 && s % 86_400 == 0 && s >= 7 * 86_400 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn render_header(app: &App, area: Rect, buf: &mut Buffer) {
    let mut left = vec![Span::styled(
        " nhiscope ",
        Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
    )];
    if !app.host.is_empty() {
        left.push(Span::raw(format!(" {} ", app.host)));
    }
    left.push(Span::raw(" "));
    left.push(match &app.conn {
        Conn::Live => Span::styled("● LIVE", Style::new().fg(Color::Green).bold()),
        Conn::Connecting => Span::styled("◌ CONNECTING", Style::new().fg(Color::Yellow).bold()),
        Conn::Down { reason, .. } if reason.starts_with("daemon not running") => {
            Span::styled("○ DAEMON NOT RUNNING", alert())
        }
        Conn::Down { .. } => Span::styled("○ NOT CONNECTED", alert()),
        Conn::Off => Span::styled("◷ HISTORY", Style::new().fg(Color::Cyan).bold()),
    });
    if let Some(h) = &app.history {
        left.push(Span::raw(" │ "));
        left.push(match &h.state {
            HistoryState::Down { .. } => Span::styled("CLICKHOUSE DOWN", alert()),
            HistoryState::Loading => Span::raw("loading history"),
            HistoryState::Ok if app.conn == Conn::Off => Span::raw(history_scope(h)),
            HistoryState::Ok => Span::raw(format!("◷ {}", history_scope(h))),
        });
    }
    if app.has_data() {
        let drift = app.drift_total();
        left.push(Span::raw(format!(" │ {} NHIs │ ", app.nhi_count())));
        left.push(if drift > 0 {
            Span::styled(format!("DRIFT {drift}"), alert())
        } else {
            Span::styled("no drift", Style::new().fg(Color::Green))
        });
        if let Some(h) = &app.health {
            left.push(Span::raw(format!(" │ {:.1} ev/s", h.events_per_sec)));
        }
    }
    let mut right = Vec::new();
    if app.paused {
        let held = if app.held.is_empty() {
            String::new()
        } else {
            format!(" +{}", app.held.len())
        };
        right.push(Span::styled(
            format!(" PAUSED{held} "),
            Style::new()
                .fg(Color::Yellow)
                .add_modifier(Modifier::REVERSED | Modifier::BOLD),
        ));
    }
    if !app.filter.is_empty() && !app.editing {
        right.push(Span::styled(
            format!(" filter: {} ", app.filter.text()),
            Style::new().fg(Color::Cyan),
        ));
    }
    // The right side (pause, filter) wins the space; the left is cut short, not overwritten.
    let right = Line::from(right);
    let right_width = (right.width() as u16).min(area.width);
    let [left_area, right_area] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(right_width)]).areas(area);
    Paragraph::new(Line::from(left)).render(left_area, buf);
    Paragraph::new(right).render(right_area, buf);
}

fn render_tabs(app: &App, area: Rect, buf: &mut Buffer) {
    let mut spans = Vec::new();
    for v in View::ALL {
        let mut label = format!("{} {}", v.index() + 1, v.title());
        if v == View::Drift && app.drift_total() > 0 {
            label.push_str(&format!(" ({})", app.drift_total()));
        }
        spans.push(if v == app.view {
            Span::styled(
                format!("[{label}]"),
                Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
            )
        } else {
            Span::styled(format!(" {label} "), Style::new().fg(Color::Gray))
        });
        spans.push(Span::raw(" "));
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
}

fn render_footer(app: &App, area: Rect, buf: &mut Buffer) {
    let key = |k: &'static str| Span::styled(k, Style::new().fg(Color::Cyan).bold());
    let line = if app.editing {
        Line::from(vec![
            key("/"),
            Span::raw(app.filter.text().to_owned()),
            Span::styled("▏", Style::new().add_modifier(Modifier::SLOW_BLINK)),
            Span::styled(
                "  Enter keep · Esc cancel · nhi: exe: host: verdict:",
                Style::new().fg(Color::DarkGray),
            ),
        ])
    } else {
        let enter = if app.view == View::Detail {
            ("Esc", ":back  ")
        } else {
            ("Enter", ":detail  ")
        };
        let pause = if app.paused { ":resume  " } else { ":pause  " };
        Line::from(vec![
            key("?"),
            Span::raw(":help  "),
            key("1-5/Tab"),
            Span::raw(":views  "),
            key("↑↓"),
            Span::raw(":move  "),
            key(enter.0),
            Span::raw(enter.1),
            key("/"),
            Span::raw(":filter  "),
            key("p"),
            Span::raw(pause),
            key("q"),
            Span::raw(":quit"),
        ])
    };
    Paragraph::new(line).render(area, buf);
}

fn render_not_connected(app: &App, area: Rect, buf: &mut Buffer) {
    let (title, mut lines) = match &app.conn {
        Conn::Off => (
            " history ",
            vec![Line::from(
                "Live feed off (--no-live): this dashboard shows history from ClickHouse only.",
            )],
        ),
        Conn::Down {
            reason,
            attempt,
            retry_in,
        } => {
            let title = if reason.starts_with("daemon not running") {
                " daemon not running "
            } else {
                " not connected "
            };
            (
                title,
                vec![
                    Line::from("The dashboard cannot read the daemon's live feed:"),
                    Line::from(""),
                    Line::styled(format!("  {reason}"), alert()),
                    Line::from(""),
                    Line::from(format!(
                        "Retrying on its own: attempt {attempt} failed, next in {}.",
                        secs(*retry_in)
                    )),
                ],
            )
        }
        _ => (
            " connecting ",
            vec![Line::from(format!("Connecting to {}…", app.socket))],
        ),
    };
    if let Some(h) = &app.history {
        lines.push(Line::from(""));
        match &h.state {
            HistoryState::Down {
                reason,
                attempt,
                retry_in,
            } => {
                lines.push(Line::from("History cannot be read from ClickHouse:"));
                lines.push(Line::styled(format!("  {reason}"), alert()));
                lines.push(Line::from(format!(
                    "Retrying on its own: attempt {attempt} failed, next in {}.",
                    secs(*retry_in)
                )));
            }
            _ => lines.push(Line::from(format!(
                "Loading history from ClickHouse ({})…",
                history_scope(h)
            ))),
        }
    }
    lines.push(Line::from(""));
    if app.conn != Conn::Off {
        lines.extend([
            Line::from("Start the daemon, as root:  nhiscope daemon --registry FILE"),
            Line::from("Another socket:             nhiscope tui --socket PATH"),
        ]);
    }
    if app.history.is_some() {
        lines.push(Line::from(
            "Another ClickHouse:         nhiscope tui --clickhouse URL",
        ));
    }
    lines.push(Line::from("Quit:                       q"));
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(Block::bordered().title(title).border_style(alert()))
        .render(area, buf);
}

const HELP: &[(&str, &str)] = &[
    ("?", "this help (any key closes it)"),
    (
        "1-5 Tab",
        "Overview Drift Stream Detail Health (Shift-Tab: back)",
    ),
    ("↑↓ j k", "move; PgUp PgDn; Home End (g G)"),
    ("Enter", "detail of the selected NHI, or of the event's NHI"),
    ("Esc", "back from detail; clear the filter; else quit"),
    ("/", "filter: words match NHI, exe, host or verdict;"),
    ("", "nhi:ID exe:PATH host:NAME verdict:drift|ok|unreg"),
    ("p Space", "pause/resume the feed and stream (counts go on)"),
    ("q Ctrl-C", "quit"),
];

fn render_help(area: Rect, buf: &mut Buffer) {
    let width = area.width.min(72);
    let height = area.height.min(HELP.len() as u16 + 5);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    Clear.render(popup, buf);
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!(" {k:<9}"), Style::new().fg(Color::Cyan).bold()),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(
        " Times are UTC. DRIFT, UNREG and OUT mark uses outside the scope.",
    ));
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(Block::bordered().title(" keys "))
        .render(popup, buf);
}

/// Red and bold: drift, a lost connection.
fn alert() -> Style {
    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
}

fn status_style(s: Status) -> Style {
    match s {
        Status::Drift => alert(),
        Status::Unregistered => Style::new().fg(Color::Yellow).bold(),
        Status::Ok => Style::new().fg(Color::Green),
        Status::Idle => Style::new().fg(Color::DarkGray),
    }
}

/// The style of the row header line of a table.
fn header_style() -> Style {
    Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
}

/// The selected row.
fn selected_style() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

/// A bar per value, scaled to the largest; an empty bucket is blank.
pub fn spark(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0);
    values
        .iter()
        .map(|&v| {
            if v == 0 || max == 0 {
                ' '
            } else {
                let level = (v * 8).div_ceil(max).clamp(1, 8);
                BARS[level as usize - 1]
            }
        })
        .collect()
}

/// `3s`, `12m`, `2h`, `4d`: how long before `now` `t` was.
pub fn ago(now: SystemTime, t: SystemTime) -> String {
    let s = now.duration_since(t).unwrap_or_default().as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// `1h02m`, `5m07s`, `42s`.
pub fn uptime(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// `HH:MM:SS` (UTC) of a time.
fn hms(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.get(11..19).unwrap_or("").to_owned()
}

/// The tail of `s` in at most `width` characters, `…` marking the cut: the end of a path says
/// more than its start.
pub fn tail(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let skip = n - (width - 1);
    std::iter::once('…').chain(s.chars().skip(skip)).collect()
}

/// `python3[4242]`: the process behind an event, in at most `width` characters; the name is
/// cut (`billing-wo…[4100]`) before the pid is.
fn process(e: &Event, width: usize) -> String {
    let name = if e.comm.is_empty() {
        e.exe.rsplit('/').next().unwrap_or("")
    } else {
        &e.comm
    };
    let pid = format!("[{}]", e.pid);
    let room = width.saturating_sub(pid.len()).max(1);
    if name.chars().count() <= room {
        return format!("{name}{pid}");
    }
    let cut: String = name.chars().take(room - 1).collect();
    format!("{cut}…{pid}")
}

/// Where an event went: `evil.example:443`, `127.0.0.9:443`, a path; a loss's count.
fn target(e: &Event) -> String {
    if let Some(n) = e.count {
        return format!(
            "{n} lost ({})",
            e.cause.as_deref().unwrap_or("unknown cause")
        );
    }
    match (e.dns_names.as_deref(), e.dport) {
        (Some([name, ..]), Some(port)) => format!("{name}:{port}"),
        _ => e.destination().unwrap_or_else(|| e.exe.to_string()),
    }
}

/// `reader`, `endpoint`, `expired`, `stale`, `interactive`.
fn drift_short(k: DriftKind) -> &'static str {
    match k {
        DriftKind::ReaderOutOfScope => "reader",
        DriftKind::EndpointOutOfScope => "endpoint",
        DriftKind::Expired => "expired",
        DriftKind::StaleCredential => "stale",
        DriftKind::InteractiveUse => "interactive",
        DriftKind::ApiOutOfScope => "api",
        DriftKind::NameMismatch => "name",
    }
}

fn drift_kinds(e: &Event) -> String {
    e.drift
        .iter()
        .map(|k| drift_short(*k))
        .collect::<Vec<_>>()
        .join(",")
}

/// A message in the middle of an empty view.
fn empty(block: Block<'_>, text: &str, area: Rect, buf: &mut Buffer) {
    Paragraph::new(text.to_owned())
        .style(Style::new().fg(Color::Gray))
        .wrap(Wrap { trim: true })
        .block(block)
        .render(area, buf);
}

#[cfg(test)]
mod tests;
