//! What senses the host: the kernel programs from userspace and what reads the host for the core.
//!
//! Loading and attaching the eBPF programs and filling their maps (`probes`, with the struct
//! offsets from `btf` and the open filter `domain::filter` compiles), DNS answers seen on the host (`dns`), what this kernel lets a process do unseen
//! (`coverage`), and the real host behind the core's `Host` interface (`proc_host`). See
//! docs/ARCHITECTURE.md.

pub mod btf;
pub mod coverage;
pub mod dns;
pub mod probes;
pub mod proc_host;
