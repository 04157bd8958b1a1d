//! The results: one row per measurement with its target and PASS/MISS, printed as a
//! table, and written as JSON (`results.json`) and as a markdown table (`results.md`).

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

/// A performance target.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
    Below(f64),
}

impl Target {
    fn met(self, v: f64) -> bool {
        match self {
            Self::AtMost(t) => v <= t,
            Self::AtLeast(t) => v >= t,
            Self::Below(t) => v < t,
        }
    }

    fn show(self, unit: &str, digits: usize) -> String {
        let (op, t) = match self {
            Self::AtMost(t) => ("<=", t),
            Self::AtLeast(t) => (">=", t),
            Self::Below(t) => ("<", t),
        };
        format!("{op} {}", fmt_num(t, unit, digits))
    }

    fn to_json(self) -> Value {
        match self {
            Self::AtMost(t) => json!({"op": "<=", "value": t}),
            Self::AtLeast(t) => json!({"op": ">=", "value": t}),
            Self::Below(t) => json!({"op": "<", "value": t}),
        }
    }
}

/// One measurement.
#[derive(Clone, Debug)]
pub struct Row {
    pub key: String,
    pub name: String,
    /// None: it could not be measured.
    pub value: Option<f64>,
    pub unit: String,
    pub digits: usize,
    pub target: Option<Target>,
    /// The lowest and highest of the values `value` sums up (e.g. the median of paired
    /// rounds), when it has them.
    pub range: Option<(f64, f64)>,
}

impl Row {
    pub fn status(&self) -> &'static str {
        match (self.value, self.target) {
            (None, _) => "N/A",
            (Some(_), None) => "",
            (Some(v), Some(t)) if t.met(v) => "PASS",
            (Some(_), Some(_)) => "MISS",
        }
    }

    fn shown_value(&self) -> String {
        match self.value {
            Some(v) => fmt_num(v, &self.unit, self.digits),
            None => "not measured".to_owned(),
        }
    }

    fn shown_target(&self) -> String {
        self.target
            .map(|t| t.show(&self.unit, self.digits))
            .unwrap_or_default()
    }
}

fn fmt_num(v: f64, unit: &str, digits: usize) -> String {
    let n = if v.abs() >= 1e6 && unit.ends_with("/s") {
        format!("{:.2}M", v / 1e6)
    } else {
        format!("{v:.digits$}")
    };
    match unit {
        "" => n,
        "x" => format!("{n}x"),
        "%" => format!("{n}%"),
        _ => format!("{n} {unit}"),
    }
}

/// All the rows, plus facts that have no target (notes).
#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    pub details: serde_json::Map<String, Value>,
}

impl Report {
    pub fn add(
        &mut self,
        key: &str,
        name: &str,
        value: Option<f64>,
        unit: &str,
        digits: usize,
        target: Option<Target>,
    ) -> &mut Row {
        self.rows.push(Row {
            key: key.to_owned(),
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            digits,
            target,
            range: None,
        });
        let last = self.rows.len() - 1;
        &mut self.rows[last]
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("bench: note: {note}");
        self.notes.push(note);
    }

    pub fn detail(&mut self, key: &str, value: Value) {
        self.details.insert(key.to_owned(), value);
    }

    fn cells(&self) -> Vec<[String; 4]> {
        self.rows
            .iter()
            .map(|r| {
                [
                    r.name.clone(),
                    r.shown_value(),
                    r.shown_target(),
                    r.status().to_owned(),
                ]
            })
            .collect()
    }

    /// The plain-text table.
    pub fn table(&self) -> String {
        let head = ["Measurement", "Value", "Target", "Status"];
        let cells = self.cells();
        let mut width = head.map(str::len);
        for row in &cells {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cols: [&str; 4]| {
            let mut s = String::new();
            for (i, c) in cols.iter().enumerate() {
                let pad = width[i] - c.chars().count();
                if i == 1 {
                    let _ = write!(s, "{}{c}  ", " ".repeat(pad));
                } else {
                    let _ = write!(s, "{c}{}  ", " ".repeat(pad));
                }
            }
            s.trim_end().to_owned()
        };
        let mut out = line(head);
        out.push('\n');
        out.push_str(&"-".repeat(width.iter().sum::<usize>() + 6));
        out.push('\n');
        for row in &cells {
            out.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
            out.push('\n');
        }
        out
    }

    pub fn markdown(&self, title: &str) -> String {
        let mut md =
            format!("# {title}\n\n| Measurement | Value | Target | Status |\n|---|---:|---|---|\n");
        for [a, b, c, d] in self.cells() {
            let _ = writeln!(md, "| {a} | {b} | {c} | {d} |");
        }
        if !self.notes.is_empty() {
            md.push_str("\nNotes:\n\n");
            for n in &self.notes {
                let _ = writeln!(md, "- {n}");
            }
        }
        md
    }

    pub fn json(&self, command: &str) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut row = json!({
                    "key": r.key,
                    "name": r.name,
                    "value": r.value,
                    "unit": r.unit,
                    "target": r.target.map(Target::to_json),
                    "status": match r.status() { "" => "INFO", s => s },
                });
                if let Some((min, max)) = r.range {
                    row["range"] = json!({"min": min, "max": max});
                }
                row
            })
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        json!({
            "command": command,
            "unix_time": now,
            "measurements": rows,
            "notes": self.notes,
            "details": Value::Object(self.details.clone()),
        })
    }

    /// Writes `results.json` and `results.md` into `dir`.
    pub fn write(&self, dir: &Path, command: &str) -> Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let j = dir.join("results.json");
        let text = serde_json::to_string_pretty(&self.json(command))?;
        fs::write(&j, text + "\n").with_context(|| format!("cannot write {}", j.display()))?;
        let m = dir.join("results.md");
        let md = self.markdown(&format!("nhiscope bench (`{command}`)"));
        fs::write(&m, md).with_context(|| format!("cannot write {}", m.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_target() {
        let mut r = Report::default();
        r.add("a", "ratio", Some(0.5), "x", 2, Some(Target::AtMost(0.7)));
        r.add(
            "b",
            "rate",
            Some(1.5e6),
            "events/s",
            0,
            Some(Target::AtLeast(2e6)),
        );
        r.add("c", "rss", None, "MB", 1, Some(Target::Below(30.0)));
        r.add("d", "info", Some(3.0), "ns/open", 1, None);
        let s: Vec<_> = r.rows.iter().map(Row::status).collect();
        assert_eq!(s, ["PASS", "MISS", "N/A", ""]);
        let t = r.table();
        assert!(t.contains("0.50x"), "{t}");
        assert!(t.contains("1.50M events/s"), "{t}");
        assert!(t.contains(">= 2.00M events/s"), "{t}");
    }
}
