//! The `--json PATH` events file: one JSON line per event, flushed after every batch, reopened on
//! SIGUSR1 (logrotate's `postrotate`) and, with `--json-max-size`, rotated by the daemon itself
//! (`PATH` -> `PATH.1` -> ... -> `PATH.N`, `--json-keep N`).
//!
//! A rotation or a reopen happens only between two lines, in the daemon's event loop: each event
//! is written whole to exactly one file, and nothing is written twice. A file grows past the
//! limit only when one line alone is larger than it. When a rotation or a reopen fails (a full
//! disk, a directory the daemon may no longer write), the daemon says so and goes on writing
//! to the file it has: no event is lost for it.

use std::{
    fs::File,
    io::{self, BufWriter, Write as _},
    path::{Path, PathBuf},
};

use crate::{
    domain::event::Event,
    publish::files::{self, FileError, Owner},
};

/// How many old files `--json-keep` keeps when it is not given.
pub const DEFAULT_KEEP: u32 = 5;

/// `--json-max-size` and `--json-keep`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// A file is rotated before a line would take it past this many bytes.
    pub max_bytes: u64,
    /// Old files kept: `PATH.1` (newest) to `PATH.N`; older ones are removed.
    pub keep: u32,
}

/// Parses a size in bytes: `1048576`, `512K`, `100M`, `2G` (K, M, G: powers of 1024; `KiB`,
/// `MB`... are read the same).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "`{s}` is not a size: a number of bytes, or with K, M or G (e.g. 100M)"
            ))
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size: it must start with a number (e.g. 100M)"))?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if bytes == 0 {
        return Err("the size must be more than 0".to_owned());
    }
    Ok(bytes)
}

/// The open events file.
pub struct EventsFile {
    path: PathBuf,
    owner: Owner,
    out: BufWriter<File>,
    /// Bytes in the current file, as far as this process knows (what it found at open, plus
    /// what it wrote).
    size: u64,
    rotation: Option<Rotation>,
    /// A rotation failed: said once, tried again at the next line that does not fit.
    rotate_failing: bool,
    /// One event's JSON line, for [`EventsFile::write`] (kept to reuse its allocation).
    line: Vec<u8>,
}

impl EventsFile {
    /// Opens (creates) `path` for appending: the daemon's own file (see [`files`]).
    pub fn open(path: &Path, owner: Owner, rotation: Option<Rotation>) -> Result<Self, FileError> {
        let (out, size) = open(path, owner)?;
        Ok(Self {
            path: path.to_owned(),
            owner,
            out,
            size,
            rotation,
            rotate_failing: false,
            line: Vec::with_capacity(1024),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `events`, each one complete line, rotating between lines as needed, and flushes.
    pub fn write(&mut self, events: &[Event]) -> io::Result<()> {
        let mut line = std::mem::take(&mut self.line);
        for e in events {
            line.clear();
            e.write_json(&mut line);
            self.write_line(&line)?;
        }
        self.line = line;
        self.flush()
    }

    /// Writes one event's JSON line (`line`, without its newline), rotating first when it
    /// would take the file past its limit. [`EventsFile::flush`] makes it reach the file.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if let Some(r) = self.rotation {
            if self.size > 0 && self.size + len > r.max_bytes {
                self.rotate(r.keep)?;
            }
        }
        self.out.write_all(line)?;
        self.out.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Closes the file and opens `PATH` again (created if it was moved away): what logrotate's
    /// `postrotate` asks with SIGUSR1. On failure the old file stays in use.
    pub fn reopen(&mut self) -> Result<(), FileError> {
        self.out.flush().map_err(|source| FileError::Io {
            what: "--json",
            path: self.path.clone(),
            source,
        })?;
        let (out, size) = open(&self.path, self.owner)?;
        self.out = out;
        self.size = size;
        Ok(())
    }

    /// `PATH.(N-1)` -> `PATH.N`, ..., `PATH` -> `PATH.1`, then a new `PATH`. Failing to rename
    /// is said once and writing goes on in the current file; failing to open the new one after
    /// the rename goes on in the renamed file (still open).
    fn rotate(&mut self, keep: u32) -> io::Result<()> {
        self.out.flush()?;
        if let Err(e) = self.shift(keep) {
            if !self.rotate_failing {
                log::error!(
                    "--json {}: cannot rotate ({e}); writing on in the current file",
                    self.path.display()
                );
                self.rotate_failing = true;
            }
            return Ok(());
        }
        match open(&self.path, self.owner) {
            Ok((out, size)) => {
                self.out = out;
                self.size = size;
                if std::mem::take(&mut self.rotate_failing) {
                    log::info!("--json {}: rotating again", self.path.display());
                }
            }
            Err(e) => {
                if !self.rotate_failing {
                    log::error!("{e}; writing on in {}.1", self.path.display());
                    self.rotate_failing = true;
                }
            }
        }
        Ok(())
    }

    fn shift(&self, keep: u32) -> io::Result<()> {
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        for n in (1..keep).rev() {
            match std::fs::rename(numbered(n), numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, numbered(1))
    }
}

fn open(path: &Path, owner: Owner) -> Result<(BufWriter<File>, u64), FileError> {
    let f = files::open_private_append("--json", path, owner)?;
    let size = f
        .metadata()
        .map_err(|source| FileError::Io {
            what: "--json",
            path: path.to_owned(),
            source,
        })?
        .len();
    Ok((BufWriter::with_capacity(64 * 1024, f), size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{Event, Kind, Ts};

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("100mb"), Ok(100 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        for bad in [
            "12Q",
            "",
            "M",
            "0",
            "0K",
            "1.5M",
            "-1",
            "10i",
            "99999999999999999999G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad} was taken");
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "nhiscope-events-file-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn event(i: usize) -> Event {
        let mut e = Event::new(Kind::Open, Ts::default(), "h".into());
        e.pid = i as u32;
        e
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn rotation_keeps_every_line_whole_once_and_n_files() {
        let d = dir("rotate");
        let path = d.join("events.jsonl");
        let one = serde_json::to_vec(&event(100)).unwrap().len() as u64 + 1;
        let max = one * 5 + one / 2;
        let mut f = EventsFile::open(
            &path,
            Owner::current(),
            Some(Rotation {
                max_bytes: max,
                keep: 3,
            }),
        )
        .unwrap();
        let events: Vec<Event> = (100..120).map(event).collect();
        for chunk in events.chunks(3) {
            f.write(chunk).unwrap();
        }
        // 20 lines, 5 a file: the current file and .1 .. .3 hold them all.
        let mut seen = Vec::new();
        for name in [
            "events.jsonl.3",
            "events.jsonl.2",
            "events.jsonl.1",
            "events.jsonl",
        ] {
            let p = d.join(name);
            let size = std::fs::metadata(&p).unwrap().len();
            assert!(size <= max, "{name}: {size} > {max}");
            for l in lines(&p) {
                let v: serde_json::Value = serde_json::from_str(&l).unwrap();
                seen.push(v["pid"].as_u64().unwrap());
            }
        }
        assert_eq!(seen, (100..120).collect::<Vec<u64>>());
        assert!(!d.join("events.jsonl.4").exists());
        // Five more: the oldest file goes.
        f.write(&(120..125).map(event).collect::<Vec<_>>()).unwrap();
        let first: serde_json::Value =
            serde_json::from_str(&lines(&d.join("events.jsonl.3"))[0]).unwrap();
        assert_eq!(first["pid"], 105);
        assert!(!d.join("events.jsonl.4").exists());
    }

    #[test]
    fn a_line_larger_than_the_limit_is_written_whole_alone() {
        let d = dir("big");
        let path = d.join("e.jsonl");
        let mut f = EventsFile::open(
            &path,
            Owner::current(),
            Some(Rotation {
                max_bytes: 10,
                keep: 5,
            }),
        )
        .unwrap();
        f.write(&[event(1), event(2)]).unwrap();
        assert_eq!(lines(&path).len(), 1);
        assert_eq!(lines(&d.join("e.jsonl.1")).len(), 1);
    }

    #[test]
    fn reopen_follows_a_moved_file() {
        let d = dir("reopen");
        let path = d.join("e.jsonl");
        let mut f = EventsFile::open(&path, Owner::current(), None).unwrap();
        f.write(&[event(1)]).unwrap();
        std::fs::rename(&path, d.join("e.jsonl.old")).unwrap();
        f.write(&[event(2)]).unwrap();
        f.reopen().unwrap();
        f.write(&[event(3)]).unwrap();
        assert_eq!(lines(&d.join("e.jsonl.old")).len(), 2);
        let now = lines(&path);
        assert_eq!(now.len(), 1);
        assert!(now[0].contains("\"pid\":3"), "{now:?}");
    }
}
