//! One NHI: its declared scope (with the APIs its endpoints declare) beside what was observed,
//! each observed reader, endpoint and API (server name, method, path of its holders' requests)
//! marked `in` or `OUT` of the scope, and its latest drift.

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Paragraph, Widget, Wrap},
};

use super::{ago, alert, drift_short, empty, status_style, tail};
use crate::{
    domain::event::Verdict,
    publish::live::protocol::{NhiSummary, PrincipalsSummary},
    view::tui::{
        app::App,
        model::{NhiRow, Seen, Stats, Subject},
    },
};

/// Observed entries listed per section.
const TOP: usize = 8;

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let Some(subject) = app.detail_subject() else {
        empty(
            Block::bordered().title(" detail "),
            "No NHI to show: pick one in the overview (1) and press Enter.",
            area,
            buf,
        );
        return;
    };
    let declared = app.declared(&subject);
    let stats = app.stats.get(&subject);
    let row = NhiRow {
        subject: subject.clone(),
        declared,
        stats,
    };
    let status = row.status();

    let [head, summary, columns, recent] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(match area.height {
            31.. => 8,
            16..=30 => 5,
            _ => 3,
        }),
    ])
    .areas(area);
    let mut title = vec![
        Span::styled(
            format!(" {} ", subject.name()),
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ),
        Span::raw(" "),
        Span::styled(status.text(), status_style(status)),
    ];
    if let Some(owner) = row.owner() {
        title.push(Span::raw(format!(" · owner {owner}")));
    }
    Paragraph::new(Line::from(title)).render(head, buf);
    Paragraph::new(summary_line(app, stats)).render(summary, buf);

    let [left, right] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(columns);
    let width = usize::from(right.width.saturating_sub(2));
    let left_width = usize::from(left.width.saturating_sub(2));
    Paragraph::new(declared_lines(&subject, declared, left_width))
        .scroll((app.detail_scroll, 0))
        .wrap(Wrap { trim: false })
        .block(Block::bordered().title(" declared scope "))
        .render(left, buf);
    Paragraph::new(observed_lines(declared, stats, width))
        .scroll((app.detail_scroll, 0))
        .block(Block::bordered().title(" observed "))
        .render(right, buf);

    let drifts: Vec<Line> = app
        .drifts
        .iter()
        .filter(|e| e.verdict == Verdict::Drift && e.nhi.as_deref() == Some(subject.name()))
        .take(3)
        .map(|e| {
            Line::from(vec![
                Span::raw(format!("{} ", e.ts.clock())),
                Span::styled("DRIFT ", alert()),
                Span::raw(e.reason.clone()),
            ])
        })
        .collect();
    let block = Block::bordered().title(" latest drift ");
    if drifts.is_empty() {
        empty(block, "None seen.", recent, buf);
    } else {
        Paragraph::new(drifts)
            .wrap(Wrap { trim: false })
            .block(block)
            .render(recent, buf);
    }
}

fn summary_line(app: &App, stats: Option<&Stats>) -> Line<'static> {
    let Some(s) = stats else {
        return Line::from(match &app.history {
            Some(h) => format!("Not used in the {}.", super::history_scope(h)),
            None => "Not used since the dashboard started.".to_owned(),
        });
    };
    let mut spans = vec![Span::raw(format!(
        "reads {} · connections {} · ",
        s.reads, s.connections
    ))];
    if s.drifts > 0 {
        let kinds = s
            .drift_kinds
            .iter()
            .map(|(k, n)| format!("{} ×{n}", drift_short(*k)))
            .collect::<Vec<_>>()
            .join(", ");
        spans.push(Span::styled(
            format!("DRIFT {} ({kinds})", s.drifts),
            alert(),
        ));
    } else {
        spans.push(Span::raw("no drift"));
    }
    if let Some(t) = s.last_seen {
        spans.push(Span::raw(format!(" · last {} ago", ago(app.now, t))));
    }
    Line::from(spans)
}

fn section(name: &str) -> Line<'static> {
    Line::styled(name.to_owned(), Style::new().add_modifier(Modifier::BOLD))
}

/// An entry of a declared list, indented; its tail when it is too long.
fn item(prefix: &str, text: &str, width: usize) -> Line<'static> {
    let room = width.saturating_sub(2 + prefix.chars().count());
    Line::from(format!("  {prefix}{}", tail(text, room)))
}

fn principals(
    lines: &mut Vec<Line<'static>>,
    name: &str,
    p: Option<&PrincipalsSummary>,
    none: &str,
    width: usize,
) {
    match p {
        None => lines.push(Line::from(vec![
            Span::styled(name.to_owned(), Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!(" {none}")),
        ])),
        Some(p) => {
            lines.push(section(name));
            lines.extend(p.exe.iter().map(|e| item("exe ", e, width)));
            if !p.uid.is_empty() {
                let uids = p.uid.iter().map(u32::to_string).collect::<Vec<_>>();
                lines.push(Line::from(format!("  uid {}", uids.join(", "))));
            }
        }
    }
}

fn declared_lines(subject: &Subject, d: Option<&NhiSummary>, width: usize) -> Vec<Line<'static>> {
    let Some(d) = d else {
        return match subject {
            Subject::Unregistered => vec![Line::from(
                "None: these watched credential files belong to no NHI. Register them to give \
                 them a scope.",
            )],
            Subject::Nhi(_) => vec![Line::from(
                "Not in the registry in force (removed by a reload?).",
            )],
        };
    };
    let mut lines = vec![section("credentials")];
    lines.extend(d.credentials.iter().map(|c| item("", c, width)));
    principals(
        &mut lines,
        "readers",
        d.readers.as_ref(),
        "any process",
        width,
    );
    if d.holders.is_some() {
        principals(&mut lines, "holders", d.holders.as_ref(), "", width);
    }
    match &d.endpoints {
        None => lines.push(Line::from(vec![
            Span::styled("endpoints", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(" not checked"),
        ])),
        Some(eps) => {
            lines.push(section("endpoints"));
            if eps.is_empty() {
                lines.push(Line::from("  none: no connection allowed"));
            }
            for (i, e) in eps.iter().enumerate() {
                lines.push(item("", e, width));
                // The APIs the entry declares, under it.
                for api in d.endpoint_apis.get(i).into_iter().flatten() {
                    lines.push(item("  ", api, width));
                }
            }
        }
    }
    if let Some(e) = &d.expires {
        lines.push(Line::from(format!("expires {e}")));
    }
    if let Some(a) = &d.max_age {
        lines.push(Line::from(format!("max age {a}")));
    }
    lines.push(Line::from(format!("interactive use: {}", d.interactive)));
    lines
}

/// `in` or `OUT` (or `--` where the scope does not check), then the entry, then the count.
fn mark(outside: bool, checked: bool, text: String, count: u64, width: usize) -> Line<'static> {
    let (m, style) = match (checked, outside) {
        (_, true) => ("OUT ", alert()),
        (true, false) => ("in  ", Style::new().fg(Color::Green)),
        (false, false) => ("--  ", Style::new().fg(Color::DarkGray)),
    };
    let count = format!(" ×{count}");
    let room = width.saturating_sub(4 + count.chars().count());
    Line::from(vec![
        Span::styled(m, style),
        Span::raw(tail(&text, room)),
        Span::raw(count),
    ])
}

fn by_count<'a, K>(m: impl Iterator<Item = (K, &'a Seen)>) -> Vec<(K, &'a Seen)> {
    let mut v: Vec<_> = m.collect();
    v.sort_by(|a, b| {
        b.1.outside
            .cmp(&a.1.outside)
            .then(b.1.count.cmp(&a.1.count))
    });
    v.truncate(TOP);
    v
}

fn observed_lines(d: Option<&NhiSummary>, s: Option<&Stats>, width: usize) -> Vec<Line<'static>> {
    let Some(s) = s else {
        return vec![Line::from("Nothing yet.")];
    };
    let mut lines = Vec::new();
    if !s.readers.is_empty() {
        lines.push(section("readers (exe, uid)"));
        let checked = d.is_some_and(|d| d.readers.is_some());
        for ((exe, uid), seen) in by_count(s.readers.iter()) {
            let text = format!("{exe} uid {uid}");
            lines.push(mark(seen.outside, checked, text, seen.count, width));
        }
    }
    if !s.endpoints.is_empty() {
        lines.push(section("endpoints"));
        let checked = d.is_some_and(|d| d.endpoints.is_some());
        for (dest, seen) in by_count(s.endpoints.iter()) {
            // A DNS name says more than an address; the feeds show both.
            let port = dest.rsplit_once(':').map_or("", |(_, p)| p);
            let text = match seen.names.iter().next() {
                Some(name) => format!("{name}:{port}"),
                None => dest.clone(),
            };
            lines.push(mark(seen.outside, checked, text, seen.count, width));
        }
    }
    if !s.apis.is_empty() {
        lines.push(section("APIs (server name, method, path)"));
        let checked = d.is_some_and(|d| d.endpoints.is_some());
        for (api, seen) in by_count(s.apis.iter()) {
            lines.push(mark(seen.outside, checked, api.clone(), seen.count, width));
        }
    }
    if !s.paths.is_empty() && d.is_none() {
        lines.push(section("files"));
        let mut paths: Vec<_> = s.paths.iter().collect();
        paths.sort_by(|a, b| b.1.cmp(a.1));
        for (p, n) in paths.into_iter().take(TOP) {
            let count = format!(" ×{n}");
            let room = width.saturating_sub(2 + count.len());
            lines.push(Line::from(format!("  {}{count}", tail(p, room))));
        }
    }
    lines.push(section("top processes"));
    let mut procs: Vec<_> = s.processes.iter().collect();
    procs.sort_by(|a, b| b.1.cmp(a.1));
    for (exe, n) in procs.into_iter().take(TOP) {
        let count = format!(" ×{n}");
        let room = width.saturating_sub(2 + count.len());
        lines.push(Line::from(format!("  {}{count}", tail(exe, room))));
    }
    if s.hosts.len() > 1 {
        lines.push(section("hosts"));
        let hosts: Vec<&str> = s.hosts.iter().map(String::as_str).collect();
        lines.push(Line::from(format!("  {}", hosts.join(", "))));
    }
    lines
}
