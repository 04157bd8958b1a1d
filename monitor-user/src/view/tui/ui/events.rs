//! The drift feed and the live event stream: tables of events, newest first.

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Layout, Rect},
    style::{Color, Style},
    text::{Line, Span},
    widgets::{
        Block, Cell, HighlightSpacing, Paragraph, Row, StatefulWidget, Table, TableState, Widget,
        Wrap,
    },
};

use super::{
    alert, drift_kinds, empty, header_style, process, selected_style, status_style, tail, target,
};
use crate::{
    domain::event::{Event, Kind, Verdict},
    view::tui::{
        app::{App, List},
        model::Status,
    },
};

/// Widths of the NHI and process columns: narrow at 80 columns, wider when there is room.
fn name_widths(area: Rect) -> (u16, u16) {
    let extra = area.width.saturating_sub(80) / 3;
    (17 + extra.min(8), 16 + extra.min(8))
}

fn title(app: &App, what: &str, n: usize) -> String {
    if app.paused {
        format!(" {what}, newest first ({n}), PAUSED ")
    } else {
        format!(" {what}, newest first ({n}) ")
    }
}

/// Draws `table` (of `n` rows) with the selection of `list`.
fn draw_table(app: &App, list: List, table: Table<'_>, n: usize, area: Rect, buf: &mut Buffer) {
    let table = table
        .row_highlight_style(selected_style())
        .highlight_symbol("▶ ")
        .highlight_spacing(HighlightSpacing::Always);
    let offset = &app.offsets[list as usize];
    let mut state = TableState::default()
        .with_offset(offset.get())
        .with_selected(Some(app.selection(list, n)));
    StatefulWidget::render(table, area, buf, &mut state);
    offset.set(state.offset());
}

/// Characters left for the flexible column once the fixed ones and the frame are drawn.
fn flex_width(area: Rect, fixed: &[u16]) -> usize {
    let used: u16 = fixed.iter().sum::<u16>() + fixed.len() as u16 + 2 + 2;
    usize::from(area.width.saturating_sub(used)).max(8)
}

pub(super) fn render_drift(app: &App, area: Rect, buf: &mut Buffer) {
    let items = app.drift_items();
    let block = Block::bordered().title(title(app, "Drift", items.len()));
    if items.is_empty() {
        let text = if !app.filter.is_empty() {
            format!(
                "No drift matches the filter `{}` (Esc clears it).",
                app.filter.text()
            )
        } else {
            "No drift since the dashboard started: every use so far was inside its declared \
             scope."
                .to_owned()
        };
        empty(block, &text, area, buf);
        return;
    }
    // The selected drift's whole reason, unless the table would have no room left.
    let pane_height = if area.height >= 16 { 6 } else { 0 };
    let [table_area, pane] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(pane_height)]).areas(area);
    let (nhi_w, proc_w) = name_widths(area);
    let fixed = [8, nhi_w, proc_w, 11];
    let tw = flex_width(table_area, &fixed);
    let rows: Vec<Row> = items
        .iter()
        .map(|e| {
            Row::new(vec![
                Cell::from(e.ts.clock().to_owned()),
                Cell::from(e.nhi.as_deref().unwrap_or_default().to_owned()),
                Cell::from(process(e, usize::from(proc_w))),
                Cell::from(tail(&target(e), tw)),
                Cell::from(drift_kinds(e)).style(alert()),
            ])
        })
        .collect();
    let header = Row::new(vec!["TIME", "NHI", "PROCESS", "TARGET", "DRIFT"]);
    let widths = [
        Constraint::Length(fixed[0]),
        Constraint::Length(fixed[1]),
        Constraint::Length(fixed[2]),
        Constraint::Fill(1),
        Constraint::Length(fixed[3]),
    ];
    let table = Table::new(rows, widths)
        .header(header.style(header_style()))
        .block(block);
    draw_table(app, List::Drift, table, items.len(), table_area, buf);

    let e = items[app.selection(List::Drift, items.len())];
    let lines = vec![
        Line::from(vec![
            Span::styled("DRIFT ", alert()),
            Span::styled(
                e.drift
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                alert(),
            ),
            Span::raw(format!(" · {} · {}", e.ts, e.host)),
        ]),
        Line::from(format!(
            "{} · {} pid {} uid {} → {}",
            e.nhi.as_deref().unwrap_or("-"),
            e.exe,
            e.pid,
            e.uid,
            e.destination().unwrap_or_default()
        )),
        Line::from(e.reason.clone()),
    ];
    if pane.height > 0 {
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" selected (Enter: NHI detail) "))
            .render(pane, buf);
    }
}

fn verdict_cell(e: &Event) -> Cell<'static> {
    let (text, style) = match (e.kind, e.verdict) {
        (Kind::Loss, _) => ("LOSS", alert()),
        (_, Verdict::Drift) => ("DRIFT", status_style(Status::Drift)),
        (_, Verdict::Unregistered) => ("UNREG", status_style(Status::Unregistered)),
        (_, Verdict::Ok) => ("ok", Style::new().fg(Color::Green)),
    };
    Cell::from(text).style(style)
}

pub(super) fn render_stream(app: &App, area: Rect, buf: &mut Buffer) {
    let items = app.stream_items();
    let block = Block::bordered().title(title(app, "Events", items.len()));
    if items.is_empty() {
        let text = if !app.filter.is_empty() {
            format!(
                "No event matches the filter `{}` (Esc clears it).",
                app.filter.text()
            )
        } else {
            "No events yet: each open of a watched credential and each connection by a holder \
             shows here as it happens."
                .to_owned()
        };
        empty(block, &text, area, buf);
        return;
    }
    let (nhi_w, proc_w) = name_widths(area);
    let fixed = [8, 5, 7, nhi_w, proc_w];
    let tw = flex_width(area, &fixed);
    let rows: Vec<Row> = items
        .iter()
        .map(|e| {
            Row::new(vec![
                Cell::from(e.ts.clock().to_owned()),
                verdict_cell(e),
                Cell::from(e.kind.as_str()),
                Cell::from(match (&e.nhi, e.verdict) {
                    (Some(id), _) => id.to_string(),
                    (None, Verdict::Unregistered) => "(unregistered)".to_owned(),
                    (None, _) => String::new(),
                }),
                Cell::from(process(e, usize::from(proc_w))),
                Cell::from(tail(&target(e), tw)),
            ])
        })
        .collect();
    let header = Row::new(vec!["TIME", "VERD.", "KIND", "NHI", "PROCESS", "TARGET"]);
    let widths = [
        Constraint::Length(fixed[0]),
        Constraint::Length(fixed[1]),
        Constraint::Length(fixed[2]),
        Constraint::Length(fixed[3]),
        Constraint::Length(fixed[4]),
        Constraint::Fill(1),
    ];
    let table = Table::new(rows, widths)
        .header(header.style(header_style()))
        .block(block);
    draw_table(app, List::Stream, table, items.len(), area, buf);
}
