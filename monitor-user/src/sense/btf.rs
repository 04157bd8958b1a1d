//! Reading struct member offsets from the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF has no CO-RE relocations, so the kernel structs the programs follow (from the
//! current task to the file behind one of its fds, its dentries and mounts, the executed file)
//! are followed at offsets computed here, at load time, for the running kernel, and handed to
//! the programs through the `CONFIG` map. The daemon does not start without all of them.

use std::collections::HashMap;

use monitor_common::config::{Offset, OFFSETS};
use thiserror::Error;

/// Why BTF could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    /// Not BTF, or a truncated or inconsistent blob.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// The struct or member is not in this kernel's BTF.
    #[error("no member {member} in struct {strukt}")]
    Missing { strukt: String, member: String },
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    ty: u32,
    /// Bit offset.
    offset: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name: u32,
    kind: u32,
    members: Vec<Member>,
}

/// The struct and union types of a BTF blob, enough to find member offsets.
pub struct Btf {
    strings: Vec<u8>,
    types: Vec<Type>, // index = type id - 1
    structs: HashMap<String, u32>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> std::io::Result<Result<Self, BtfError>> {
        Ok(Self::parse(&std::fs::read("/sys/kernel/btf/vmlinux")?))
    }

    /// Parse a little-endian BTF blob.
    pub fn parse(b: &[u8]) -> Result<Self, BtfError> {
        let bad = BtfError::Malformed;
        if b.len() < 24 || b[0..2] != [0x9f, 0xeb] {
            return Err(bad("bad magic"));
        }
        let hdr_len = u32_at(b, 4).ok_or(bad("header"))? as usize;
        let type_off = u32_at(b, 8).ok_or(bad("header"))? as usize;
        let type_len = u32_at(b, 12).ok_or(bad("header"))? as usize;
        let str_off = u32_at(b, 16).ok_or(bad("header"))? as usize;
        let str_len = u32_at(b, 20).ok_or(bad("header"))? as usize;
        let types_b = b
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(bad("type section"))?;
        let strings = b
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(bad("string section"))?
            .to_vec();
        let mut types = Vec::new();
        let mut at = 0;
        while at < types_b.len() {
            let name = u32_at(types_b, at).ok_or(bad("type"))?;
            let info = u32_at(types_b, at + 4).ok_or(bad("type"))?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kflag = info >> 31 == 1;
            let mut members = Vec::new();
            at += match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + 12 * i;
                        let off = u32_at(types_b, m + 8).ok_or(bad("member"))?;
                        members.push(Member {
                            name: u32_at(types_b, m).ok_or(bad("member"))?,
                            ty: u32_at(types_b, m + 4).ok_or(bad("member"))?,
                            offset: if kflag { off & 0x00ff_ffff } else { off },
                        });
                    }
                    12 * vlen
                }
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                _ => 0,
            };
            types.push(Type {
                name,
                kind,
                members,
            });
        }
        let mut btf = Self {
            strings,
            types,
            structs: HashMap::new(),
        };
        for (i, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 {
                let n = btf.name(t.name).to_string();
                btf.structs.entry(n).or_insert(i as u32 + 1);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// The byte offset of `member` in `struct strukt`, looking into anonymous structs and
    /// unions.
    pub fn offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let missing = || BtfError::Missing {
            strukt: strukt.into(),
            member: member.into(),
        };
        let id = *self.structs.get(strukt).ok_or_else(missing)?;
        self.find(id, member, 0).ok_or_else(missing)
    }

    fn find(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        let t = self.types.get(id.checked_sub(1)? as usize)?;
        for m in &t.members {
            if self.name(m.name) == member {
                return Some(m.offset / 8);
            }
        }
        if depth > 4 {
            return None;
        }
        for m in t.members.iter().filter(|m| m.name == 0) {
            let inner = self.types.get(m.ty.checked_sub(1)? as usize)?;
            if inner.kind == KIND_STRUCT || inner.kind == KIND_UNION {
                if let Some(o) = self.find(m.ty, member, depth + 1) {
                    return Some(m.offset / 8 + o);
                }
            }
        }
        None
    }
}

/// Where each `monitor_common::config::Offset` is: (slot, struct, member). The programs follow
/// these from the current task to its open files, their inodes and dentries, the mounts above
/// them, the executed file and a syscall's saved registers.
const MEMBERS: [(Offset, &str, &str); OFFSETS as usize] = [
    (Offset::TaskFiles, "task_struct", "files"),
    (Offset::FilesFdt, "files_struct", "fdt"),
    (Offset::FdtFd, "fdtable", "fd"),
    (Offset::FileInode, "file", "f_inode"),
    (Offset::InodeIno, "inode", "i_ino"),
    (Offset::InodeSb, "inode", "i_sb"),
    (Offset::SbDev, "super_block", "s_dev"),
    (Offset::TaskParent, "task_struct", "real_parent"),
    (Offset::InodeMode, "inode", "i_mode"),
    (Offset::TaskSignal, "task_struct", "signal"),
    (Offset::SignalTty, "signal_struct", "tty"),
    (Offset::FileMode, "file", "f_mode"),
    (Offset::FilePath, "file", "f_path"),
    (Offset::PathMnt, "path", "mnt"),
    (Offset::PathDentry, "path", "dentry"),
    (Offset::DentryParent, "dentry", "d_parent"),
    (Offset::DentryName, "dentry", "d_name"),
    (Offset::QstrName, "qstr", "name"),
    (Offset::DentryInode, "dentry", "d_inode"),
    (Offset::VfsmountRoot, "vfsmount", "mnt_root"),
    (Offset::MountMnt, "mount", "mnt"),
    (Offset::MountParent, "mount", "mnt_parent"),
    (Offset::MountMountpoint, "mount", "mnt_mountpoint"),
    (Offset::TaskFs, "task_struct", "fs"),
    (Offset::FsRoot, "fs_struct", "root"),
    (Offset::FsPwd, "fs_struct", "pwd"),
    (Offset::TaskMm, "task_struct", "mm"),
    (Offset::MmExeFile, "mm_struct", "exe_file"),
    (Offset::BprmFilename, "linux_binprm", "filename"),
    (Offset::BprmInterp, "linux_binprm", "interp"),
    (Offset::RegsDi, "pt_regs", "di"),
    (Offset::RegsSi, "pt_regs", "si"),
    (Offset::RegsDx, "pt_regs", "dx"),
    (Offset::IoOpenDfd, "io_open", "dfd"),
    (Offset::IoOpenFileSlot, "io_open", "file_slot"),
    (Offset::IoOpenFilename, "io_open", "filename"),
    (Offset::FilenameName, "filename", "name"),
    (Offset::TaskPid, "task_struct", "pid"),
    (Offset::TaskTgid, "task_struct", "tgid"),
    (Offset::KiocbOpcode, "io_kiocb", "opcode"),
    (Offset::DentryShortname, "dentry", "d_shortname|d_iname"),
    (Offset::FdtMaxFds, "fdtable", "max_fds"),
    (Offset::FilePrivateData, "file", "private_data"),
    (Offset::SocketSk, "socket", "sk"),
    (Offset::SkcFamily, "sock_common", "skc_family"),
    (Offset::SkcState, "sock_common", "skc_state"),
    (Offset::SkcDaddr, "sock_common", "skc_daddr"),
    (Offset::SkcRcvSaddr, "sock_common", "skc_rcv_saddr"),
    (Offset::SkcDport, "sock_common", "skc_dport"),
    (Offset::SkcNum, "sock_common", "skc_num"),
    (Offset::SkcV6Daddr, "sock_common", "skc_v6_daddr"),
    (Offset::SkcV6RcvSaddr, "sock_common", "skc_v6_rcv_saddr"),
    (Offset::SkProtocol, "sock", "sk_protocol"),
    (Offset::TaskGroupLeader, "task_struct", "group_leader"),
    (Offset::TaskStartTime, "task_struct", "start_time"),
    (Offset::SkcNet, "sock_common", "skc_net"),
    (Offset::NetCookie, "net", "net_cookie"),
    (Offset::TaskNsproxy, "task_struct", "nsproxy"),
    (Offset::NsproxyNetNs, "nsproxy", "net_ns"),
    (Offset::NetUserNs, "net", "user_ns"),
    (Offset::UserNsLevel, "user_namespace", "level"),
];

/// The byte offsets of every kernel struct member the programs follow, for the running kernel,
/// indexed by `monitor_common::config::Offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets(pub [u32; OFFSETS as usize]);

impl KernelOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self, BtfError> {
        let mut out = [0; OFFSETS as usize];
        for (slot, strukt, member) in MEMBERS {
            // `a|b`: the member's name in this kernel, then in older ones.
            let mut found = Err(BtfError::Missing {
                strukt: strukt.into(),
                member: member.into(),
            });
            for name in member.split('|') {
                found = btf.offset(strukt, name);
                if found.is_ok() {
                    break;
                }
            }
            out[slot as usize] = found?;
        }
        Ok(Self(out))
    }

    pub fn get(&self, o: Offset) -> u32 {
        self.0[o as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with `struct inner { int a; int b; }` and
    /// `struct outer { int x; union { struct inner in; int y; }; int z; }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0a\0b\0inner\0outer\0x\0in\0y\0z\0".to_vec();
        let s = |name: &str| -> u32 {
            let hay = &strings;
            let needle: Vec<u8> = [name.as_bytes(), b"\0"].concat();
            (1..hay.len())
                .find(|&i| hay[i..].starts_with(&needle) && hay[i - 1] == 0)
                .expect("string") as u32
        };
        let mut t = Vec::new();
        let mut ty = |name: u32, kind: u32, vlen: u32, size: u32, extra: &[u32]| {
            for v in [name, (kind << 24) | vlen, size].iter().chain(extra) {
                t.extend_from_slice(&v.to_le_bytes());
            }
        };
        ty(s("int"), KIND_INT, 0, 4, &[32]); // 1: int
        ty(
            s("inner"),
            KIND_STRUCT,
            2,
            8,
            &[s("a"), 1, 0, s("b"), 1, 32],
        ); // 2
        ty(0, KIND_UNION, 2, 8, &[s("in"), 2, 0, s("y"), 1, 0]); // 3: anonymous union
        ty(
            s("outer"),
            KIND_STRUCT,
            3,
            20,
            &[s("x"), 1, 0, 0, 3, 64, s("z"), 1, 128],
        ); // 4
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for v in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend(t);
        b.extend(strings);
        b
    }

    #[test]
    fn member_offsets_including_anonymous_unions() {
        let btf = Btf::parse(&blob()).expect("parses");
        assert_eq!(btf.offset("outer", "x"), Ok(0));
        assert_eq!(btf.offset("outer", "y"), Ok(8));
        assert_eq!(btf.offset("outer", "in"), Ok(8));
        assert_eq!(btf.offset("outer", "z"), Ok(16));
        assert_eq!(btf.offset("inner", "b"), Ok(4));
        assert!(matches!(
            btf.offset("outer", "nope"),
            Err(BtfError::Missing { .. })
        ));
        assert!(matches!(
            btf.offset("nope", "x"),
            Err(BtfError::Missing { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Btf::parse(b"not btf at all, not at all....").is_err());
        let b = blob();
        for cut in 0..b.len() {
            let _ = Btf::parse(&b[..cut]);
        }
    }

    #[test]
    fn the_running_kernel_has_the_offsets_we_need() {
        let Ok(Ok(btf)) = Btf::from_sys_fs() else {
            eprintln!("skipping: no readable /sys/kernel/btf/vmlinux");
            return;
        };
        let o = KernelOffsets::from_btf(&btf).expect("offsets");
        for (slot, _, _) in MEMBERS {
            assert_eq!(MEMBERS[slot as usize].0, slot, "MEMBERS is in slot order");
        }
        assert!(
            o.get(Offset::TaskFiles) > 0 && o.get(Offset::FileInode) > 0,
            "{o:?}"
        );
        // `struct path` is { mnt, dentry }: two pointers.
        assert_eq!(o.get(Offset::PathDentry), o.get(Offset::PathMnt) + 8);
    }
}
