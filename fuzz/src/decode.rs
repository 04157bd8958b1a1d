//! Ring-buffer records (`nhiscope::domain::decode::decode`) and the engine they feed.
//!
//! The input is records back to back, as the kernel could send them: each is decoded from
//! where the previous one ended, and is as long as the struct its kind names, until one does
//! not decode. A record the kernel could send must never panic the engine, whatever its fields
//! say (lengths past their buffers, unknown flags, pids that were never seen): each decoded one
//! goes into a fresh [`Engine`] with an empty /proc, as in the engine's unit tests, and every
//! event it decides is written as the daemon writes it and read back as the dashboard reads it.

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use monitor_common::{
    ConnectEvent, EventHeader, ExecEvent, ExitEvent, ForkEvent, OpenEvent, RequestEvent,
};
use nhiscope::{
    domain::decode::{decode, encode, KernelEvent},
    domain::engine::{Clock, Engine},
    domain::event::Event,
    domain::registry::{self, Registry},
};

/// The registry the engine runs with: the example one, so that records can hit its NHIs.
const REGISTRY: &str = include_str!("../../examples/registry.yaml");

/// The record's bytes as the kernel wrote them.
pub fn bytes_of(ev: &KernelEvent) -> Vec<u8> {
    match ev {
        KernelEvent::Open(e) => encode::<OpenEvent>(e),
        KernelEvent::Exec(e) => encode::<ExecEvent>(e),
        KernelEvent::Fork(e) => encode::<ForkEvent>(e),
        KernelEvent::Exit(e) => encode::<ExitEvent>(e),
        KernelEvent::Connect(e) => encode::<ConnectEvent>(e),
        KernelEvent::Request(e) => encode::<RequestEvent>(e),
    }
}

/// An empty directory standing for /proc, made once per process.
fn proc_root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("nhiscope-fuzz-proc-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&root) {
            panic!("cannot make the fixture /proc {}: {e}", root.display());
        }
        root
    })
}

fn registry() -> Arc<Registry> {
    static REG: OnceLock<Arc<Registry>> = OnceLock::new();
    Arc::clone(REG.get_or_init(
        || match registry::parse(REGISTRY, "examples/registry.yaml") {
            Ok(r) => Arc::new(r),
            Err(e) => panic!("the example registry does not load: {e}"),
        },
    ))
}

pub fn check(data: &[u8]) {
    let mut engine = Engine::new(
        registry(),
        proc_root(),
        Clock::with_offset(0),
        "fuzz".into(),
    );
    let mut out = Vec::new();
    let mut rest = data;
    while let Ok(ev) = decode(rest) {
        let bytes = bytes_of(&ev);
        // An open record may be cut anywhere after its fixed part (the kernel sends only the
        // names in use): what was there re-encodes to itself, but for a `names_len` claiming
        // more names than came, which is held to those that came, and the path's bytes past
        // `path_len`, which are not read.
        let used = bytes.len().min(rest.len());
        let mut came = rest[..used].to_vec();
        if let KernelEvent::Open(o) = &ev {
            let names = std::mem::offset_of!(OpenEvent, names);
            assert!(
                o.names_len as usize <= used - names,
                "names_len past the record"
            );
            let at = std::mem::offset_of!(OpenEvent, names_len);
            came[at..at + 4].copy_from_slice(&o.names_len.to_ne_bytes());
            // Nor is the path past its length, which reads as zeros.
            let path = std::mem::offset_of!(OpenEvent, path);
            let kept = path + (o.path_len as usize).min(o.path.len());
            came[kept..names].fill(0);
        }
        assert!(
            came[..] == bytes[..used],
            "a decoded record does not re-encode to the bytes it came from"
        );
        assert_eq!(decode(&bytes).as_ref(), Ok(&ev), "re-decoding differs");
        let hdr: &EventHeader = ev.header();
        let _ = nhiscope::domain::decode::comm(hdr);
        engine.handle(ev, &mut out);
        rest = &rest[used..];
    }
    for e in &out {
        // The daemon's JSON line (file, live feed), then the dashboard reading it.
        let mut line = Vec::new();
        e.write_json(&mut line);
        if let Err(err) = serde_json::from_slice::<Event>(&line) {
            panic!("the dashboard cannot read an event the daemon writes: {err}");
        }
    }
}
