//! The domain core: what nhiscope decides, in plain Rust that does no I/O.
//!
//! The kernel's records as typed values (`decode`), the registry users write and its patterns,
//! the built-in watch list, the process table and who holds which NHI (attribution), the
//! verdicts with their sentences, and the event they produce. What the core needs from the host (process facts, file identities and times, the
//! cgroup tree, directory listings, the clock) it asks through [`host::Host`]; the daemon gives
//! it the real host (`sense::proc_host`), the unit tests a fake. See docs/ARCHITECTURE.md.

pub mod cgroups;
pub mod decode;
pub mod engine;
pub mod event;
pub mod filter;
pub mod host;
pub mod kubernetes;
pub mod pattern;
pub mod proctable;
pub mod redact;
pub mod registry;
pub mod resolve;
pub mod scope;
pub mod text;
pub mod verdict;
pub mod watchlist;
pub mod wire;
