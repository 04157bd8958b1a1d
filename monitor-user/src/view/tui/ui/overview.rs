//! The overview: one row per NHI, its status, how much it was used and where it drifted.

use ratatui::{
    buffer::Buffer,
    layout::{Constraint, Rect},
    text::Line,
    widgets::{Block, Cell, HighlightSpacing, Row, StatefulWidget, Table, TableState},
};

use super::{ago, empty, header_style, selected_style, spark, status_style};
use crate::view::tui::{
    app::{App, List},
    model::Status,
};

/// Width of the activity sparkline: two minutes in 10 s buckets.
const SPARK: u16 = 12;
/// The column shown only for a fleet: on how many hosts the NHI was used.
const HOSTS_COLUMN: usize = 3;

pub(super) fn render(app: &App, area: Rect, buf: &mut Buffer) {
    let rows = app.rows();
    let block = Block::bordered().title(format!(" NHIs ({}) ", rows.len()));
    if rows.is_empty() {
        let text = if !app.filter.is_empty() {
            format!(
                "Nothing matches the filter `{}` (Esc clears it).",
                app.filter.text()
            )
        } else {
            "No NHI is registered and no credential use was seen yet. The daemon still watches \
             the built-in credential patterns: uses of them show here as (unregistered)."
                .to_owned()
        };
        empty(block, &text, area, buf);
        return;
    }
    let selected = app.selection(List::Overview, rows.len());
    // A fleet: how many hosts each NHI was used on.
    let fleet = app.history.as_ref().is_some_and(|h| h.fleet.len() > 1);
    let table_rows = rows.iter().map(|r| {
        let status = r.status();
        let hosts = r.stats.map_or(0, |s| s.hosts.len()).to_string();
        let (reads, conns, drifts, last, series) = match r.stats {
            Some(s) => (
                s.reads.to_string(),
                s.connections.to_string(),
                s.drifts.to_string(),
                s.last_seen.map_or("-".to_owned(), |t| ago(app.now, t)),
                spark(&s.series(app.now, SPARK as usize)),
            ),
            None => (
                "0".into(),
                "0".into(),
                "0".into(),
                "-".into(),
                String::new(),
            ),
        };
        let drift_cell = Cell::from(Line::from(drifts).right_aligned());
        Row::new(
            vec![
                Cell::from(status.text()).style(status_style(status)),
                Cell::from(r.subject.name().to_owned()),
                Cell::from(r.owner().unwrap_or("").to_owned()),
                Cell::from(Line::from(hosts).right_aligned()),
                Cell::from(Line::from(reads).right_aligned()),
                Cell::from(Line::from(conns).right_aligned()),
                if status == Status::Drift {
                    drift_cell.style(status_style(status))
                } else {
                    drift_cell
                },
                Cell::from(Line::from(last).right_aligned()),
                Cell::from(series),
            ]
            .into_iter()
            .enumerate()
            .filter(|(i, _)| fleet || *i != HOSTS_COLUMN)
            .map(|(_, c)| c)
            .collect::<Vec<_>>(),
        )
    });
    let header = Row::new(
        vec![
            Cell::from("STATE"),
            Cell::from("NHI"),
            Cell::from("OWNER"),
            Cell::from(Line::from("HOSTS").right_aligned()),
            Cell::from(Line::from("READS").right_aligned()),
            Cell::from(Line::from("CONNS").right_aligned()),
            Cell::from(Line::from("DRIFT").right_aligned()),
            Cell::from(Line::from("LAST").right_aligned()),
            Cell::from("ACTIVITY"),
        ]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| fleet || *i != HOSTS_COLUMN)
        .map(|(_, c)| c)
        .collect::<Vec<_>>(),
    )
    .style(header_style());
    let widths: Vec<Constraint> = [
        Constraint::Length(5),
        Constraint::Fill(3),
        Constraint::Fill(2),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(4),
        Constraint::Length(SPARK),
    ]
    .into_iter()
    .enumerate()
    .filter(|(i, _)| fleet || *i != HOSTS_COLUMN)
    .map(|(_, c)| c)
    .collect();
    let table = Table::new(table_rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(selected_style())
        .highlight_symbol("▶ ")
        .highlight_spacing(HighlightSpacing::Always);
    let offset = &app.offsets[List::Overview as usize];
    let mut state = TableState::default()
        .with_offset(offset.get())
        .with_selected(Some(selected));
    StatefulWidget::render(table, area, buf, &mut state);
    offset.set(state.offset());
}
