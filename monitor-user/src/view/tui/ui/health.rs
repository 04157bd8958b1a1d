//! The daemon's health: kernel drops, ring buffer fill, ClickHouse lag and spool, DNS answers not
//! believed, uptime, the event rate, and the dashboard's own view of the feed.

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Paragraph, Sparkline, Widget, Wrap},
};

use super::{ago, alert, history_scope, uptime};
use crate::view::tui::app::{App, Conn, History, HistoryState};

/// A host whose last heartbeat is older than this is marked: its daemon may be down (they
/// beat every 10 s).
const STALE_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(60);

/// The history's state and the fleet, one line per host.
fn history_lines(app: &App, h: &History, lines: &mut Vec<Line<'static>>) {
    let mut v = match &h.state {
        HistoryState::Loading => vec![Span::raw("loading")],
        HistoryState::Ok => vec![good("read".into())],
        HistoryState::Down { reason, .. } => {
            vec![Span::styled("DOWN ", alert()), Span::raw(reason.clone())]
        }
    };
    v.push(Span::raw(format!(" · {}", history_scope(h))));
    if let Some(t) = h.loaded_at {
        v.push(Span::raw(format!(" · fetched {} ago", ago(app.now, t))));
    }
    if h.pending() > 0 {
        v.push(Span::raw(format!(
            " · {} live event(s) not in it yet",
            h.pending()
        )));
    }
    if h.truncated {
        v.push(Span::styled(
            " · CUT: the rarest uses are not counted (narrow --since or --host)",
            alert(),
        ));
    }
    lines.push(row("history", v));
    for (i, host) in h.fleet.iter().enumerate() {
        let mut v = vec![Span::raw(format!("{:<16} ", host.host))];
        if !host.version.is_empty() {
            v.push(Span::raw(format!("nhiscope {} · ", host.version)));
        }
        match host.last_heartbeat {
            Some(t) if app.now.duration_since(t).unwrap_or_default() > STALE_HEARTBEAT => {
                v.push(Span::styled("SILENT", alert()));
                v.push(Span::raw(format!(
                    " last heartbeat {} ago",
                    ago(app.now, t)
                )));
            }
            Some(t) => v.push(Span::raw(format!("heartbeat {} ago", ago(app.now, t)))),
            None => v.push(Span::raw("no heartbeat")),
        }
        let lost: u64 = host.lost.values().sum();
        if lost > 0 {
            v.push(Span::raw(" · "));
            v.push(Span::styled(format!("LOSS {lost}"), alert()));
        }
        lines.push(row(if i == 0 { "fleet" } else { "" }, v));
    }
}

/// A ring buffer at least this full is shown as an alert.
const RING_ALERT: f64 = 0.8;

fn row(name: &str, value: Vec<Span<'static>>) -> Line<'static> {
    let mut spans = vec![Span::styled(
        format!("{name:<13}"),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    spans.extend(value);
    Line::from(spans)
}

fn good(text: String) -> Span<'static> {
    Span::styled(text, Style::new().fg(Color::Green))
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let [text_area, spark_area] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(6)]).areas(area);
    let mut lines = Vec::new();
    let daemon = match &app.conn {
        Conn::Live => {
            let up = app
                .health
                .as_ref()
                .map(|h| format!(" · up {}", uptime(h.uptime_secs)))
                .unwrap_or_default();
            vec![
                good("live".into()),
                Span::raw(format!(
                    " · host {} · pid {}{up} · {}",
                    app.host, app.daemon_pid, app.socket
                )),
            ]
        }
        Conn::Connecting => vec![Span::raw("connecting")],
        Conn::Off => vec![Span::raw("live feed off (--no-live)")],
        Conn::Down { reason, .. } => vec![Span::styled(reason.clone(), alert())],
    };
    lines.push(row("daemon", daemon));
    match &app.health {
        None => lines.push(row("health", vec![Span::raw("no report yet")])),
        Some(h) => {
            lines.push(row(
                "events",
                vec![Span::raw(format!(
                    "{} since start · {:.1}/s now",
                    h.events_total, h.events_per_sec
                ))],
            ));
            let drops = if h.kernel_drops == 0 {
                vec![good("none".into())]
            } else {
                let causes = h
                    .kernel_drops_by_cause
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                vec![
                    Span::styled(format!("LOSS {}", h.kernel_drops), alert()),
                    Span::raw(format!(" records lost in the kernel ({causes})")),
                ]
            };
            lines.push(row("kernel drops", drops));
            let size = h
                .ringbuf_bytes
                .map(|b| format!(" of {}", bytes(b)))
                .unwrap_or_default();
            lines.push(row(
                "ring buffer",
                match h.ringbuf_fill {
                    // Near full, the kernel is about to drop records: say so loudly.
                    Some(f) if f >= RING_ALERT => vec![
                        Span::styled(format!("{:.0}% FULL", f * 100.0), alert()),
                        Span::raw(format!("{size} at its peak (records are lost when full)")),
                    ],
                    Some(f) => vec![Span::raw(format!(
                        "{:.0}% full{size} at its peak since the last report",
                        f * 100.0
                    ))],
                    None => vec![Span::raw("fill not reported by the daemon")],
                },
            ));
            let ch = match &h.clickhouse {
                None => vec![Span::raw("not configured")],
                Some(c) => {
                    let mut v = if c.connected {
                        vec![good("connected".into())]
                    } else {
                        vec![Span::styled("DOWN", alert())]
                    };
                    if let Some(lag) = c.lag_secs {
                        v.push(Span::raw(format!(" · lag {lag:.1}s")));
                    }
                    if let Some(b) = c.spool_bytes {
                        v.push(Span::raw(format!(" · spool {}", bytes(b))));
                    }
                    if let Some(r) = c.spool_rows {
                        v.push(Span::raw(format!(" ({r} rows)")));
                    }
                    if let Some(e) = &c.last_error {
                        v.push(Span::raw(format!(" · {e}")));
                    }
                    v
                }
            };
            lines.push(row("ClickHouse", ch));
            // Said only when it happens: DNS answers nobody asked for are an attack or a
            // misconfigured network, and hostname endpoints ignored them.
            if h.dns_rejected > 0 {
                lines.push(row(
                    "DNS",
                    vec![
                        Span::styled(format!("REJECTED {}", h.dns_rejected), alert()),
                        Span::raw(
                            " answer(s) not believed (no matching query, or off the question's \
                             CNAME chain)",
                        ),
                    ],
                ));
            }
            lines.push(row(
                "live feed",
                vec![Span::raw(format!(
                    "{} client(s) · {} dropped as too slow · {} refused",
                    h.live_clients, h.live_clients_dropped, h.live_clients_refused
                ))],
            ));
            // What this host lets processes do unseen: said plainly, every time.
            for door in &h.unseen {
                lines.push(row("NOT SEEN", vec![Span::styled(door.clone(), alert())]));
            }
        }
    }
    let c = &app.counters;
    lines.push(row(
        "dashboard",
        vec![Span::raw(format!(
            "{} messages · {} events · {} not understood · {} connection(s)",
            c.messages, c.events, c.garbled, c.connects
        ))],
    ));
    if let Some(h) = &app.history {
        history_lines(app, h, &mut lines);
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(Block::bordered().title(" health "))
        .render(text_area, buf);

    let data: Vec<u64> = app.rate_history.iter().copied().collect();
    let max = data.iter().copied().max().unwrap_or(0);
    Sparkline::default()
        .block(Block::bordered().title(format!(
            " events/s, last {} reports (max {max}) ",
            data.len()
        )))
        .data(&data)
        .style(Style::new().fg(Color::Cyan))
        .render(spark_area, buf);
}
