//! Batches: rows of one table that are inserted together, spooled together, and named by one
//! token (`<host>:<run_id>:<table>:<first seq>:<rows>`) that stays the same on every retry.

use std::collections::HashSet;

use super::{
    row::{AgentRow, EventRow, LossRow, Ts},
    schema::Table,
};

/// Rows of one table.
#[derive(Clone, Debug, PartialEq)]
pub enum Rows {
    Events(Vec<EventRow>),
    Losses(Vec<LossRow>),
    Agents(Vec<AgentRow>),
}

/// Rows inserted together, with a token naming them (the deduplication token on servers that
/// have `insert_deduplication_token`).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `<host>:<run_id>:<table>:<first seq>:<rows>`.
    pub token: String,
    pub run_id: u64,
    pub rows: Rows,
    /// Whether an earlier attempt may have stored some of it.
    pub uncertain: bool,
}

impl Batch {
    pub fn new(host: &str, run_id: u64, rows: Rows) -> Self {
        let mut b = Batch {
            token: String::new(),
            run_id,
            rows,
            uncertain: false,
        };
        b.token = format!(
            "{host}:{run_id:016x}:{}:{}:{}",
            b.table().name(),
            b.seq_range().0,
            b.len()
        );
        b
    }

    pub fn table(&self) -> Table {
        match self.rows {
            Rows::Events(_) => Table::Events,
            Rows::Losses(_) => Table::Losses,
            Rows::Agents(_) => Table::Agents,
        }
    }

    pub fn len(&self) -> usize {
        match &self.rows {
            Rows::Events(r) => r.len(),
            Rows::Losses(r) => r.len(),
            Rows::Agents(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One batch of the rows of `parts` (consecutive spooled batches of one table and run).
    /// It is uncertain when any part is; a single part keeps its token.
    pub fn merge(mut parts: Vec<Batch>) -> Batch {
        if parts.len() == 1 {
            return parts.remove(0);
        }
        let n = parts.len();
        let mut iter = parts.into_iter();
        let Some(mut out) = iter.next() else {
            return Batch {
                token: String::new(),
                run_id: 0,
                rows: Rows::Events(Vec::new()),
                uncertain: false,
            };
        };
        for b in iter {
            out.uncertain |= b.uncertain;
            match (&mut out.rows, b.rows) {
                (Rows::Events(a), Rows::Events(b)) => a.extend(b),
                (Rows::Losses(a), Rows::Losses(b)) => a.extend(b),
                (Rows::Agents(a), Rows::Agents(b)) => a.extend(b),
                // `Spool::front_group` groups one table only.
                _ => {}
            }
        }
        out.token = format!("{}+{}", out.token, n - 1);
        out
    }

    /// `(seq, time)` of every row.
    pub(super) fn keys(&self) -> Vec<(u64, Ts)> {
        match &self.rows {
            Rows::Events(r) => r.iter().map(|r| (r.seq, r.ts())).collect(),
            Rows::Losses(r) => r.iter().map(|r| (r.seq, r.end)).collect(),
            Rows::Agents(r) => r.iter().map(|r| (r.seq, r.ts)).collect(),
        }
    }

    /// The oldest time among the rows (event time, or a loss's end), if any.
    pub fn oldest_ts(&self) -> Option<Ts> {
        self.keys().iter().map(|k| k.1).min()
    }

    /// Lowest and highest `seq` (`(0, 0)` when empty).
    pub fn seq_range(&self) -> (u64, u64) {
        let keys = self.keys();
        let lo = keys.iter().map(|k| k.0).min().unwrap_or(0);
        let hi = keys.iter().map(|k| k.0).max().unwrap_or(0);
        (lo, hi)
    }

    /// The host of the rows (all rows of a batch have the store's host).
    pub(super) fn host(&self) -> Option<&str> {
        match &self.rows {
            Rows::Events(r) => r.first().map(EventRow::host),
            Rows::Losses(r) => r.first().map(|r| r.host.as_str()),
            Rows::Agents(r) => r.first().map(|r| r.host.as_str()),
        }
    }

    /// The same batch without the rows whose `seq` is in `skip`.
    pub(super) fn without(&self, skip: &HashSet<u64>) -> Batch {
        let keep = |s: &u64| !skip.contains(s);
        let rows = match &self.rows {
            Rows::Events(r) => Rows::Events(r.iter().filter(|r| keep(&r.seq)).cloned().collect()),
            Rows::Losses(r) => Rows::Losses(r.iter().filter(|r| keep(&r.seq)).cloned().collect()),
            Rows::Agents(r) => Rows::Agents(r.iter().filter(|r| keep(&r.seq)).cloned().collect()),
        };
        Batch {
            token: format!("{}:rest{}", self.token, skip.len()),
            run_id: self.run_id,
            rows,
            uncertain: self.uncertain,
        }
    }
}
