//! Decoding ring-buffer records into typed kernel events.
//!
//! A record is the bytes of one `monitor_common` struct, chosen by the `kind` in its header.
//! Records are validated by length before they are read, so a short or unknown record is an
//! error, never undefined behaviour.

use monitor_common::{
    ConnectEvent, EventHeader, EventKind, ExecEvent, ExitEvent, ForkEvent, OpenEvent, Pod,
    RequestEvent,
};
use thiserror::Error;

/// One record from the kernel. The large ones are read where they lie when they can be
/// ([`Rec`]): an exec record is 3.4 KiB, of which the daemon reads a few hundred bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelEvent<'a> {
    Open(Box<OpenEvent>),
    Exec(Rec<'a, ExecEvent>),
    Fork(ForkEvent),
    Exit(ExitEvent),
    Connect(ConnectEvent),
    /// A connection's first bytes (parsed by `domain::wire`, never kept).
    Request(Rec<'a, RequestEvent>),
}

/// A large record of the kernel's: the record's own bytes, read in place, when they are whole
/// and aligned for `T` (the ring buffer's are: it hands records over 8-byte aligned), else a
/// copy in a box (bytes from elsewhere, and records made by tests).
#[derive(Debug)]
pub enum Rec<'a, T> {
    InPlace(&'a T),
    Boxed(Box<T>),
}

impl<T> std::ops::Deref for Rec<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Self::InPlace(r) => r,
            Self::Boxed(b) => b,
        }
    }
}

impl<T: Clone> Clone for Rec<'_, T> {
    fn clone(&self) -> Self {
        match self {
            Self::InPlace(r) => Self::InPlace(r),
            Self::Boxed(b) => Self::Boxed(b.clone()),
        }
    }
}

impl<T: PartialEq> PartialEq for Rec<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Eq> Eq for Rec<'_, T> {}

impl<T> From<T> for Rec<'static, T> {
    fn from(value: T) -> Self {
        Self::Boxed(Box::new(value))
    }
}

impl KernelEvent<'_> {
    pub fn header(&self) -> &EventHeader {
        match self {
            Self::Open(e) => &e.hdr,
            Self::Exec(e) => &e.hdr,
            Self::Fork(e) => &e.hdr,
            Self::Exit(e) => &e.hdr,
            Self::Connect(e) => &e.hdr,
            Self::Request(e) => &e.hdr,
        }
    }
}

/// A record of the DNS ring buffer (`monitor_common::DnsRecord`): the packet's bytes, from its
/// IP header, and where it was seen (sent or received, in which network namespace, whether the
/// host owns a query's namespace). Read in place, without copying the record; `None` when it is
/// shorter than its header or than the length it gives.
pub fn dns_record(bytes: &[u8]) -> Option<(&[u8], crate::sense::dns::Origin)> {
    use monitor_common::{DnsRecord, DNS_CAP, DNS_OUTGOING, DNS_UNTRUSTED_NS};
    const DATA: usize = core::mem::offset_of!(DnsRecord, data);
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let len = word(core::mem::offset_of!(DnsRecord, len))? as usize;
    let flags = word(core::mem::offset_of!(DnsRecord, flags))?;
    let at = core::mem::offset_of!(DnsRecord, netns);
    let netns = u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
    let ifindex = word(core::mem::offset_of!(DnsRecord, ifindex))?;
    if len > DNS_CAP {
        return None;
    }
    let pkt = bytes.get(DATA..DATA + len)?;
    let origin = crate::sense::dns::Origin {
        outgoing: flags & DNS_OUTGOING != 0,
        netns,
        ifindex,
        untrusted_ns: flags & DNS_UNTRUSTED_NS != 0,
    };
    Some((pkt, origin))
}

/// Why a record could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the header, or than the struct its kind names.
    #[error("record of {len} bytes is too short for {what} ({need} bytes)")]
    Short {
        what: &'static str,
        len: usize,
        need: usize,
    },
    /// A kind number this build does not know (a newer or corrupt kernel object).
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

fn read<T: Pod>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            what,
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: the length was checked above; T is Pod, so every bit pattern of its size is a
    // valid value; read_unaligned has no alignment need.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

thread_local! {
    /// The box of the last open record handled, for the next one of its kind
    /// ([`recycle`]): records come one after another on the thread that reads the ring buffer,
    /// and a box of a few kilobytes is costlier to allocate than to fill.
    static SPARE_OPEN: std::cell::Cell<Option<Box<OpenEvent>>> = const { std::cell::Cell::new(None) };
    /// The box [`read_open`] filled last (its address) and where its written path bytes end:
    /// past that end, up to the names, its bytes are zero. When that box comes back, only the
    /// bytes the last path wrote beyond the new one's end need zeroing, not the rest of the
    /// 256-byte path buffer at every open. Any other box is zeroed in full. (A box made
    /// elsewhere, which only tests and fuzzing do, at the address of one dropped unrecycled
    /// could keep bytes past its path: nothing reads past `path_len`, so that is tidiness, not
    /// what any decision rests on.)
    static FILLED_OPEN: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

/// A large record's box, once its record is handled: the next [`decode`] on this thread fills
/// it again instead of allocating one.
pub fn recycle(ev: KernelEvent<'_>) {
    match ev {
        KernelEvent::Open(b) => SPARE_OPEN.with(|s| s.set(Some(b))),
        KernelEvent::Exec(_)
        | KernelEvent::Fork(_)
        | KernelEvent::Exit(_)
        | KernelEvent::Connect(_)
        | KernelEvent::Request(_) => {}
    }
}

/// `bytes` as the record `T`: where they lie when they are aligned for it, else copied into a
/// box. `Short` when they are fewer than `size_of::<T>()`.
fn in_place<'a, T: Pod>(bytes: &'a [u8], what: &'static str) -> Result<Rec<'a, T>, DecodeError> {
    let size = std::mem::size_of::<T>();
    long_enough(bytes, what, size)?;
    if bytes.as_ptr().align_offset(std::mem::align_of::<T>()) == 0 {
        // SAFETY: `bytes` hold at least `size_of::<T>()` bytes (checked above) at an address
        // aligned for `T`; T is Pod, so every bit pattern is a valid value; the reference
        // borrows `bytes` for its whole life, so the bytes cannot change or go under it.
        return Ok(Rec::InPlace(unsafe { &*bytes.as_ptr().cast::<T>() }));
    }
    let mut b = Box::<T>::new_uninit();
    // SAFETY: the box holds `size` bytes and `bytes` at least as many; a fresh box and a
    // borrowed slice do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), b.as_mut_ptr().cast::<u8>(), size) };
    // SAFETY: every byte of the box was copied just above, and T is Pod, so any bytes of its
    // size are a valid value.
    Ok(Rec::Boxed(unsafe { b.assume_init() }))
}

/// `Short` when `bytes` are fewer than the `need` a record of `what` must have.
fn long_enough(bytes: &[u8], what: &'static str, need: usize) -> Result<(), DecodeError> {
    if bytes.len() < need {
        return Err(DecodeError::Short {
            what,
            len: bytes.len(),
            need,
        });
    }
    Ok(())
}

/// An open record, copied into a box (a recycled one as a rule): the kernel sends only the
/// `names` bytes in use, so the record may end anywhere after `names` starts, and a reference
/// to the whole struct could not be made of it. Only what is in use is copied: the fixed part,
/// the `path_len` bytes of the path (the rest of it reads as zeros: in the box this function
/// filled last, only what the last path wrote past this one's end is zeroed) and the names
/// that came. A recycled box keeps
/// the names of an earlier record past the end of this one, so `names_len` is held to the
/// bytes that came, and nothing reads past it.
fn read_open(bytes: &[u8]) -> Result<Box<OpenEvent>, DecodeError> {
    const PATH: usize = std::mem::offset_of!(OpenEvent, path);
    const NAMES: usize = std::mem::offset_of!(OpenEvent, names);
    const PATH_LEN: usize = std::mem::offset_of!(OpenEvent, path_len);
    long_enough(bytes, "an open", NAMES)?;
    // How far the box's path bytes may be non-zero: a box this function did not fill last
    // (a fresh one is all zero) may have any bytes up to the names.
    let (mut o, dirty_end) = match SPARE_OPEN.with(std::cell::Cell::take) {
        Some(b) => {
            let (filled, end) = FILLED_OPEN.with(std::cell::Cell::get);
            let end = if filled == std::ptr::addr_of!(*b) as usize {
                end
            } else {
                NAMES
            };
            (b, end)
        }
        // SAFETY: OpenEvent is Pod: all-zero bytes are a valid value.
        None => (
            unsafe { Box::<OpenEvent>::new_zeroed().assume_init() },
            PATH,
        ),
    };
    let path_len = u32::from_ne_bytes([
        bytes[PATH_LEN],
        bytes[PATH_LEN + 1],
        bytes[PATH_LEN + 2],
        bytes[PATH_LEN + 3],
    ]) as usize;
    let fixed = PATH + path_len.min(NAMES - PATH);
    let end = bytes.len().min(std::mem::size_of::<OpenEvent>());
    let to = std::ptr::addr_of_mut!(*o).cast::<u8>();
    // SAFETY: the box holds an OpenEvent of `size_of::<OpenEvent>()` bytes; `fixed` is at most
    // NAMES, and `end` at most the struct's size and at most the length of `bytes` (at least
    // NAMES, checked above), so each range written lies in the box and each range read in
    // `bytes`; OpenEvent is Pod, so any bytes are a valid value; a box and a borrowed slice do
    // not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), to, fixed);
        // Beyond `dirty_end` the bytes are zero already.
        std::ptr::write_bytes(to.add(fixed), 0, dirty_end.saturating_sub(fixed));
        std::ptr::copy_nonoverlapping(bytes.as_ptr().add(NAMES), to.add(NAMES), end - NAMES);
    }
    FILLED_OPEN.with(|f| f.set((to as usize, fixed)));
    o.names_len = o.names_len.min((end - NAMES) as u32);
    Ok(o)
}

/// Decode one ring-buffer record; the large ones borrow `bytes` where they can ([`Rec`]).
pub fn decode(bytes: &[u8]) -> Result<KernelEvent<'_>, DecodeError> {
    let hdr: EventHeader = read(bytes, "a header")?;
    let kind = EventKind::from_u32(hdr.kind).ok_or(DecodeError::UnknownKind(hdr.kind))?;
    Ok(match kind {
        EventKind::Open => KernelEvent::Open(read_open(bytes)?),
        EventKind::Exec => KernelEvent::Exec(in_place(bytes, "an exec")?),
        EventKind::Fork => KernelEvent::Fork(read(bytes, "a fork")?),
        EventKind::Exit => KernelEvent::Exit(read(bytes, "an exit")?),
        EventKind::Connect => KernelEvent::Connect(read(bytes, "a connect")?),
        EventKind::Request => KernelEvent::Request(in_place(bytes, "a request")?),
    })
}

/// The bytes of a record, as the kernel writes them (for tests and benchmarks).
pub fn encode<T: Pod>(value: &T) -> Vec<u8> {
    // SAFETY: T is Pod: it has no padding, so all of its size_of::<T>() bytes are initialised,
    // and they stay borrowed from `value` only until the copy.
    unsafe {
        std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
    }
    .to_vec()
}

/// The bytes before the first NUL (or all of them), capped at `len`.
pub fn c_bytes(buf: &[u8], len: usize) -> &[u8] {
    let b = &buf[..len.min(buf.len())];
    // The standard library's NUL search goes a word at a time.
    match std::ffi::CStr::from_bytes_until_nul(b) {
        Ok(s) => s.to_bytes(),
        Err(_) => b,
    }
}

/// A real path from the kernel's dentry walk: NUL-terminated components, leaf first
/// (`token\0app\0srv\0`), as `/srv/app/token`. `None` when the walk did not reach the root
/// (`complete` unset) or found nothing. A component holding a `/` or a `..` cannot come from a
/// dentry and makes the whole path `None`.
pub fn names_path(buf: &[u8], len: u32, complete: bool) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt as _;
    if !complete {
        return None;
    }
    let used = &buf[..(len as usize).min(buf.len())];
    let mut parts: Vec<&[u8]> = used.split(|&b| b == 0).filter(|c| !c.is_empty()).collect();
    if parts
        .iter()
        .any(|c| c.contains(&b'/') || *c == b".." || *c == b".")
    {
        return None;
    }
    parts.reverse();
    let mut out = std::ffi::OsString::from("/");
    for (i, c) in parts.iter().enumerate() {
        if i > 0 {
            out.push("/");
        }
        out.push(std::ffi::OsStr::from_bytes(c));
    }
    Some(out.into())
}

/// `comm` as text.
pub fn comm(hdr: &EventHeader) -> String {
    crate::domain::text::lossy(c_bytes(&hdr.comm, hdr.comm.len()))
}

/// How many command names [`Comms`] remembers before it starts afresh.
const COMMS_CAP: usize = 4096;

/// Command names as text, remembered by the header's bytes: a host's records carry few names,
/// and the events made of them share one copy of each. Bounded: cleared when full.
#[derive(Debug, Default)]
pub struct Comms {
    names: std::collections::HashMap<
        [u8; monitor_common::COMM_LEN],
        crate::domain::event::SharedStr,
        foldhash::fast::RandomState,
    >,
}

impl Comms {
    /// The header's command name, as [`comm`] reads it.
    pub fn get(&mut self, hdr: &EventHeader) -> crate::domain::event::SharedStr {
        if let Some(name) = self.names.get(&hdr.comm) {
            return name.clone();
        }
        if self.names.len() >= COMMS_CAP {
            self.names.clear();
        }
        let name = crate::domain::event::SharedStr::from(comm(hdr));
        self.names.insert(hdr.comm, name.clone());
        name
    }
}

/// The NUL-separated arguments of an exec.
pub fn args(ev: &ExecEvent) -> Vec<String> {
    let used = (ev.args_len as usize).min(ev.args.len());
    ev.args[..used]
        .split(|&b| b == 0)
        .take(ev.argc as usize)
        .map(crate::domain::text::lossy)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_common::{OpenOp, AF_INET6, PATH_CAP};

    fn hdr(kind: EventKind) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        EventHeader {
            kind: kind as u32,
            pid: 4242,
            tid: 4243,
            uid: 1001,
            gid: 1002,
            flags: 0,
            ts_ns: 123_456_789,
            cgroup_id: 77,
            comm,
        }
    }

    fn open(kind: EventKind) -> OpenEvent {
        let mut path = [0u8; PATH_CAP];
        path[..19].copy_from_slice(b"/etc/app/creds.json");
        let mut names = [0u8; 2 * monitor_common::NAMES_CAP];
        names[..19].copy_from_slice(b"creds.json\0app\0etc\0");
        OpenEvent {
            hdr: hdr(kind),
            op: OpenOp::Openat as u32,
            dfd: -100,
            open_flags: 0o2000000,
            flags: 0,
            ret: -13,
            path_len: 19,
            names_len: 19,
            stdout_ino: 77,
            ino: 1234,
            dev: 0x801,
            _pad2: 0,
            path,
            names,
        }
    }

    #[test]
    fn a_dns_record_gives_its_packet_and_origin_and_a_bad_length_nothing() {
        use crate::sense::dns::Origin;
        let mut r = monitor_common::DnsRecord {
            len: 3,
            flags: monitor_common::DNS_OUTGOING,
            netns: 4026531840,
            ifindex: 1,
            _pad: 0,
            data: [0; monitor_common::DNS_CAP],
        };
        r.data[..3].copy_from_slice(b"abc");
        let bytes = encode(&r);
        assert_eq!(
            dns_record(&bytes),
            Some((&b"abc"[..], Origin::sent(4026531840)))
        );
        r.flags = monitor_common::DNS_OUTGOING | monitor_common::DNS_UNTRUSTED_NS;
        let own = Origin {
            untrusted_ns: true,
            ..Origin::sent(4026531840)
        };
        assert_eq!(dns_record(&encode(&r)), Some((&b"abc"[..], own)));
        r.flags = 0;
        assert_eq!(
            dns_record(&encode(&r)),
            Some((&b"abc"[..], Origin::received(4026531840)))
        );
        assert_eq!(dns_record(&bytes[..10]), None, "shorter than its length");
        r.len = monitor_common::DNS_CAP as u32 + 1;
        assert_eq!(dns_record(&encode(&r)), None, "a length past the record");
        assert_eq!(dns_record(&[]), None);
    }

    #[test]
    fn round_trip_every_kind() {
        let o = open(EventKind::Open);
        assert_eq!(decode(&encode(&o)), Ok(KernelEvent::Open(Box::new(o))));
        assert_eq!(
            names_path(&o.names, o.names_len, true),
            Some("/etc/app/creds.json".into())
        );

        let mut e: ExecEvent =
            read(&vec![0u8; std::mem::size_of::<ExecEvent>()], "x").expect("zeroed");
        e.hdr = hdr(EventKind::Exec);
        e.old_tid = 4243;
        e.filename_len = 13;
        e.filename[..13].copy_from_slice(b"/usr/bin/curl");
        let a = b"curl\0-s\0http://x\0";
        e.args[..a.len()].copy_from_slice(a);
        e.args_len = a.len() as u32;
        e.argc = 3;
        let bytes = encode(&e);
        let d = decode(&bytes).expect("exec decodes");
        assert_eq!(d, KernelEvent::Exec(e.into()));
        let KernelEvent::Exec(d) = d else {
            unreachable!()
        };
        assert_eq!(args(&d), vec!["curl", "-s", "http://x"]);

        let f = ForkEvent {
            hdr: hdr(EventKind::Fork),
            child_tid: 9,
            _pad: 0,
        };
        assert_eq!(decode(&encode(&f)), Ok(KernelEvent::Fork(f)));
        let x = ExitEvent {
            hdr: hdr(EventKind::Exit),
        };
        assert_eq!(decode(&encode(&x)), Ok(KernelEvent::Exit(x)));
        let mut daddr = [0u8; 16];
        daddr[15] = 1;
        let n = ConnectEvent {
            hdr: hdr(EventKind::Connect),
            family: AF_INET6,
            sport: 40000,
            dport: 443,
            proto: monitor_common::IPPROTO_UDP,
            saddr: [0; 16],
            daddr,
            stdin_pipe: 99,
            netns: 4026531840,
        };
        assert_eq!(decode(&encode(&n)), Ok(KernelEvent::Connect(n)));
        let mut r =
            monitor_common::RequestEvent::piece(99, 1, 7, b"GET", monitor_common::WIRE_LAST);
        r.hdr = hdr(EventKind::Request);
        r.family = AF_INET6;
        r.daddr = daddr;
        r.netns = 4026531841;
        assert_eq!(decode(&encode(&r)), Ok(KernelEvent::Request(r.into())));
        assert!(
            decode(&encode(&r)[..100]).is_err(),
            "a cut request is refused"
        );
        assert_eq!(comm(&n.hdr), "curl");
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert!(matches!(decode(&[0u8; 8]), Err(DecodeError::Short { .. })));
        let o = encode(&open(EventKind::Open));
        // An open cut after its fixed part is whole (names are sent as long as they are).
        let fixed = std::mem::offset_of!(OpenEvent, names);
        let KernelEvent::Open(cut) = decode(&o[..fixed + 19]).expect("a short open decodes") else {
            unreachable!()
        };
        assert_eq!(*cut, open(EventKind::Open));
        assert!(matches!(
            decode(&o[..100]),
            Err(DecodeError::Short {
                what: "an open",
                ..
            })
        ));
        let mut bad = o.clone();
        bad[0] = 99;
        assert_eq!(decode(&bad), Err(DecodeError::UnknownKind(99)));
    }

    #[test]
    fn names_become_a_path_only_when_whole_and_sane() {
        let n = b"token\0app\0srv\0";
        assert_eq!(names_path(n, 14, true), Some("/srv/app/token".into()));
        assert_eq!(names_path(n, 14, false), None);
        assert_eq!(names_path(b"", 0, true), Some("/".into()));
        assert_eq!(names_path(b"x\0..\0y\0", 7, true), None);
        assert_eq!(names_path(b"a/b\0c\0", 6, true), None);
        // A length past the buffer is capped, never a panic.
        assert_eq!(names_path(n, 9999, true), Some("/srv/app/token".into()));
    }

    #[test]
    fn arguments_stop_at_argc_and_args_len() {
        let mut e: ExecEvent =
            read(&vec![0u8; std::mem::size_of::<ExecEvent>()], "x").expect("zeroed");
        let a = b"sh\0-c\0garbage";
        e.args[..a.len()].copy_from_slice(a);
        e.args_len = 6;
        e.argc = 2;
        assert_eq!(args(&e), vec!["sh", "-c"]);
    }

    #[test]
    fn a_large_record_is_read_where_it_lies_when_aligned_and_copied_when_not() {
        let mut e: ExecEvent =
            read(&vec![0u8; std::mem::size_of::<ExecEvent>()], "x").expect("zeroed");
        e.hdr = hdr(EventKind::Exec);
        e.filename_len = 7;
        e.filename[..7].copy_from_slice(b"/bin/sh");
        // As the ring buffer holds it: 8-byte aligned (a u64 buffer), and one byte off.
        let bytes = encode(&e);
        let mut words = vec![0u64; 2 * (bytes.len() / 8) + 4];
        // SAFETY: plain integers viewed as bytes, within the buffer's length.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
        };
        buf[..bytes.len()].copy_from_slice(&bytes);
        let skew = bytes.len().next_multiple_of(8) + 1;
        buf[skew..skew + bytes.len()].copy_from_slice(&bytes);
        let aligned = &buf[..bytes.len()];
        match decode(aligned).expect("decodes") {
            KernelEvent::Exec(Rec::InPlace(r)) => {
                assert!(std::ptr::eq(r, aligned.as_ptr().cast::<ExecEvent>()));
                assert_eq!(*r, e);
            }
            other => panic!("not read in place: {other:?}"),
        }
        let off = &buf[skew..skew + bytes.len()];
        match decode(off).expect("decodes") {
            KernelEvent::Exec(Rec::Boxed(b)) => assert_eq!(*b, e),
            other => panic!("an unaligned record must be copied: {other:?}"),
        }
        assert!(
            decode(&aligned[..aligned.len() - 1]).is_err(),
            "a cut exec is refused, aligned or not"
        );
    }

    #[test]
    fn an_open_s_path_past_its_length_reads_as_zeros_whatever_the_record_holds() {
        let mut o = open(EventKind::Open);
        let n = o.path_len as usize;
        o.path[n + 1..n + 9].copy_from_slice(b"leftover");
        let bytes = encode(&o);
        let d = decode(&bytes).expect("decodes");
        let KernelEvent::Open(b) = &d else {
            panic!("an open")
        };
        assert_eq!(&b.path[..n], &o.path[..n]);
        assert!(b.path[n..].iter().all(|&c| c == 0));
        assert_eq!(b.names, o.names);
        recycle(d);
        // A record whose path is longer than the buffer: capped, never past it.
        o.path_len = 9999;
        let bytes = encode(&o);
        let d = decode(&bytes).expect("decodes");
        let KernelEvent::Open(b) = &d else {
            panic!("an open")
        };
        assert_eq!(b.path, o.path);
        assert_eq!(b.names, o.names);
    }

    #[test]
    fn a_recycled_box_keeps_no_byte_of_a_longer_path_before_it() {
        let path_past = |d: &KernelEvent<'_>| {
            let KernelEvent::Open(b) = d else {
                panic!("an open")
            };
            let n = b.path_len as usize;
            (b.path[..n].to_vec(), b.path[n..].iter().all(|&c| c == 0))
        };
        let mut o = open(EventKind::Open);
        // A long path, then a short one in the same box: the long one's tail is zeroed.
        let long = vec![b'a'; PATH_CAP - 10];
        o.path[..long.len()].copy_from_slice(&long);
        o.path_len = long.len() as u32;
        let bytes = encode(&o);
        let d = decode(&bytes).expect("decodes");
        assert_eq!(path_past(&d), (long, true));
        recycle(d);
        o.path[..6].copy_from_slice(b"/short");
        o.path[6..].fill(0);
        o.path_len = 6;
        let bytes = encode(&o);
        let d = decode(&bytes).expect("decodes");
        assert_eq!(path_past(&d), (b"/short".to_vec(), true));
        recycle(d);
        // A box that did not come from a decode, with bytes everywhere: zeroed past the path.
        let mut foreign = open(EventKind::Open);
        foreign.path.fill(b'z');
        recycle(KernelEvent::Open(Box::new(foreign)));
        let d = decode(&bytes).expect("decodes");
        assert_eq!(path_past(&d), (b"/short".to_vec(), true));
    }

    #[test]
    fn a_recycled_box_is_filled_again_with_the_next_record() {
        let mut o = open(EventKind::Open);
        let bytes = encode(&o);
        let first = decode(&bytes).expect("decodes");
        let KernelEvent::Open(b) = &first else {
            panic!("an open")
        };
        let at: *const OpenEvent = &**b;
        recycle(first);
        o.path[..3].copy_from_slice(b"/x2");
        // A short record: its names are those that came (none), never the last record's,
        // whatever length it claims.
        assert!(o.names_len > 0);
        let cut = std::mem::offset_of!(OpenEvent, names);
        let bytes = encode(&o);
        let second = decode(&bytes[..cut]).expect("decodes");
        let KernelEvent::Open(b) = &second else {
            panic!("an open")
        };
        assert_eq!(&**b as *const OpenEvent, at);
        assert_eq!(&b.path[..3], b"/x2");
        assert_eq!(b.names_len, 0);
        assert_eq!(
            names_path(&b.names, b.names_len, true),
            Some(std::path::PathBuf::from("/")),
            "no names came: the last record's are not read"
        );
    }
}
