//! Types shared by the kernel programs (`monitor-ebpf`) and the daemon (`monitor-user`).
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of pointers, so the kernel can write it into
//! the ring buffer and the daemon can read it back from the same bytes. The layouts are the ABI
//! between the two halves: change a struct and both sides change together (they are built from
//! this one crate), and the round-trip tests in `monitor-user` catch a drifting decoder. The
//! records are [`Pod`] (checked at compile time): the daemon reads them from raw bytes.
#![cfg_attr(not(test), no_std)]

pub mod event;
pub mod filter;
pub mod pod;

pub use event::*;
pub use pod::Pod;
