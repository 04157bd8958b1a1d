//! The daemon's own files, made so that no other local user can read, replace or share them:
//! the process umask, the `--json` output (created 0600, never through a symbolic link), the
//! private directories it keeps data in (0700, owned by the daemon's user) and the lock files
//! that keep a second daemon off the same spool or live socket.
//!
//! Every check here is made on the object opened (`fstat` of the descriptor, `O_NOFOLLOW`), not
//! on a path looked up twice, so that a local user cannot swap a file between the check and the
//! use.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Seek as _, Write as _},
    os::unix::{
        fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
        io::AsRawFd as _,
    },
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Why one of the daemon's files cannot be used. All of them are the user's to fix (exit 2).
#[derive(Debug, Error)]
pub enum FileError {
    /// The path is a symbolic link; the daemon does not follow links to its own files, which
    /// another user could have planted.
    #[error("{what} {}: is a symbolic link, which nhiscope refuses to follow; give the real path", .path.display())]
    Symlink {
        /// What the file is for (`--json`, `spool directory`).
        what: &'static str,
        path: PathBuf,
    },
    /// The path exists and is not the kind of file expected (a FIFO, a device, a directory).
    #[error("{what} {}: {why}", .path.display())]
    Kind {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    /// Another user owns it, so they could read or change what the daemon writes.
    #[error(
        "{what} {}: owned by uid {owner}, but the daemon runs as uid {expected}: \
         `chown -R {expected} {}` or give another path",
        .path.display(), .path.display()
    )]
    Owner {
        what: &'static str,
        path: PathBuf,
        owner: u32,
        expected: u32,
    },
    /// Writable by its group or by every user: anyone could plant or replace files in it.
    #[error(
        "{what} {}: mode {mode:04o} lets other users write there; `chmod 0700 {}` or give \
         another path",
        .path.display(), .path.display()
    )]
    Writable {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    /// Another daemon holds the lock.
    #[error(
        "{what} {} is in use by another nhiscope daemon (pid {}; lock {}): stop it, or give \
         this one another {what}",
        .path.display(),
        .pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
        .lock.display()
    )]
    Locked {
        what: &'static str,
        path: PathBuf,
        lock: PathBuf,
        pid: Option<u32>,
    },
    /// A system call on the path failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Who the daemon's files belong to: the user it runs as after attaching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// The process's own effective user and group.
    pub fn current() -> Owner {
        // SAFETY: geteuid and getegid have no preconditions and cannot fail.
        unsafe {
            Owner {
                uid: libc::geteuid(),
                gid: libc::getegid(),
            }
        }
    }
}

/// Files and directories the daemon creates are its own only: 0600 and 0700 whatever mode a
/// call asks for. Set first, before any file is made.
pub fn restrict_umask() {
    // SAFETY: umask only changes the process's file mode creation mask.
    unsafe { libc::umask(0o077) };
}

/// Opens `path` for appending, creating it 0600, without following a symbolic link at it. An
/// existing file must be a regular file with one link, owned by root or `owner`; it is made
/// 0600 and given to `owner`, who keeps writing it after the daemon switched users.
pub fn open_private_append(
    what: &'static str,
    path: &Path,
    owner: Owner,
) -> Result<File, FileError> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        // O_NONBLOCK: a FIFO planted at the path must not hang the daemon before it is refused.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => FileError::Symlink {
                what,
                path: path.to_owned(),
            },
            // What a FIFO without a reader answers to a non-blocking open for writing.
            Some(libc::ENXIO) => FileError::Kind {
                what,
                path: path.to_owned(),
                why: "not a regular file".into(),
            },
            _ => FileError::Io {
                what,
                path: path.to_owned(),
                source: e,
            },
        })?;
    let m = f.metadata().map_err(io_err(what, path))?;
    let kind = |why: &str| FileError::Kind {
        what,
        path: path.to_owned(),
        why: why.to_owned(),
    };
    if !m.file_type().is_file() {
        return Err(kind("not a regular file"));
    }
    // A hard link to another file (say /etc/shadow, planted in a shared directory) would make
    // the daemon write into it.
    if m.nlink() != 1 {
        return Err(kind(
            "has other hard links; nhiscope writes only to a file of its own",
        ));
    }
    if m.uid() != 0 && m.uid() != owner.uid {
        return Err(FileError::Owner {
            what,
            path: path.to_owned(),
            owner: m.uid(),
            expected: owner.uid,
        });
    }
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err(what, path))?;
    fchown(&f, owner).map_err(io_err(what, path))?;
    clear_nonblock(&f).map_err(io_err(what, path))?;
    Ok(f)
}

fn fchown(f: &File, owner: Owner) -> io::Result<()> {
    // SAFETY: fchown on a descriptor we own.
    if unsafe { libc::fchown(f.as_raw_fd(), owner.uid, owner.gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn clear_nonblock(f: &File) -> io::Result<()> {
    let fd = f.as_raw_fd();
    // SAFETY: fcntl F_GETFL/F_SETFL on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes sure `dir` is a private directory of `owner`: created 0700 and given to `owner` when
/// missing (its missing parents 0755, so that `owner` can reach it), else checked: a real
/// directory (not a link), owned by `owner`, not writable by group or others. Read and search
/// bits for others are taken away with a warning (directories made by earlier versions were
/// 0755).
pub fn private_dir(what: &'static str, dir: &Path, owner: Owner) -> Result<(), FileError> {
    match fs::symlink_metadata(dir) {
        Ok(m) => check_private_dir(what, dir, &m, owner),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                make_parents(what, parent)?;
            }
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(io_err(what, dir))?;
            let f = File::open(dir).map_err(io_err(what, dir))?;
            fchown(&f, owner).map_err(io_err(what, dir))?;
            Ok(())
        }
        Err(e) => Err(FileError::Io {
            what,
            path: dir.to_owned(),
            source: e,
        }),
    }
}

fn check_private_dir(
    what: &'static str,
    dir: &Path,
    m: &fs::Metadata,
    owner: Owner,
) -> Result<(), FileError> {
    if m.file_type().is_symlink() {
        return Err(FileError::Symlink {
            what,
            path: dir.to_owned(),
        });
    }
    if !m.is_dir() {
        return Err(FileError::Kind {
            what,
            path: dir.to_owned(),
            why: "not a directory".into(),
        });
    }
    if m.uid() != owner.uid {
        return Err(FileError::Owner {
            what,
            path: dir.to_owned(),
            owner: m.uid(),
            expected: owner.uid,
        });
    }
    let mode = m.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(FileError::Writable {
            what,
            path: dir.to_owned(),
            mode,
        });
    }
    if mode & 0o077 != 0 {
        log::warn!(
            "{what} {}: mode {mode:04o} let other users read it: now 0700",
            dir.display()
        );
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o700))
            .map_err(io_err(what, dir))?;
    }
    Ok(())
}

/// Creates the missing ancestors of a private directory 0755 (the umask would make them 0700,
/// and the daemon's user could not reach its own directory through them).
fn make_parents(what: &'static str, dir: &Path) -> Result<(), FileError> {
    if dir.exists() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        make_parents(what, parent)?;
    }
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(io_err(what, dir))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(FileError::Io {
            what,
            path: dir.to_owned(),
            source: e,
        }),
    }
}

/// An exclusive lock on a file holding the pid of its holder (`flock`, so the kernel releases
/// it when the process dies, however it dies). Held until dropped.
#[derive(Debug)]
pub struct PidLock {
    _file: File,
    path: PathBuf,
}

impl PidLock {
    /// Takes the lock at `lock` for the resource `path` (what the messages name), or says which
    /// process holds it.
    pub fn acquire(what: &'static str, path: &Path, lock: &Path) -> Result<PidLock, FileError> {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(lock)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => FileError::Symlink {
                    what,
                    path: lock.to_owned(),
                },
                _ => FileError::Io {
                    what,
                    path: lock.to_owned(),
                    source: e,
                },
            })?;
        if !f.metadata().map_err(io_err(what, lock))?.is_file() {
            return Err(FileError::Kind {
                what,
                path: lock.to_owned(),
                why: "the lock is not a regular file".into(),
            });
        }
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = f.read_to_string(&mut text);
                return Err(FileError::Locked {
                    what,
                    path: path.to_owned(),
                    lock: lock.to_owned(),
                    pid: text.trim().parse().ok(),
                });
            }
            return Err(FileError::Io {
                what,
                path: lock.to_owned(),
                source: e,
            });
        }
        let pid = format!("{}\n", std::process::id());
        f.set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| f.write_all(pid.as_bytes()))
            .map_err(io_err(what, lock))?;
        Ok(PidLock {
            _file: f,
            path: lock.to_owned(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file guarding the live socket at `socket`: `<socket>.lock`, beside it.
pub fn socket_lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nhiscope-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_json_file_is_created_0600_and_a_symlink_is_refused() {
        let d = dir("json");
        let me = Owner::current();
        let path = d.join("events.jsonl");
        drop(open_private_append("--json", &path, me).unwrap());
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);

        let target = d.join("target");
        fs::write(&target, "keep\n").unwrap();
        let link = d.join("link.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_private_append("--json", &link, me).unwrap_err();
        assert!(matches!(e, FileError::Symlink { .. }), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep\n");
    }

    #[test]
    fn a_hard_link_or_a_fifo_is_refused() {
        let d = dir("links");
        let me = Owner::current();
        let a = d.join("a");
        fs::write(&a, "").unwrap();
        fs::hard_link(&a, d.join("b")).unwrap();
        assert!(matches!(
            open_private_append("--json", &a, me),
            Err(FileError::Kind { .. })
        ));
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            open_private_append("--json", &fifo, me),
            Err(FileError::Kind { .. })
        ));
    }

    #[test]
    fn private_dirs_are_made_0700_and_writable_ones_refused() {
        let d = dir("dirs");
        let me = Owner::current();
        let spool = d.join("a/b/spool");
        private_dir("spool directory", &spool, me).unwrap();
        assert_eq!(fs::metadata(&spool).unwrap().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(d.join("a/b")).unwrap().mode() & 0o777, 0o755);

        fs::set_permissions(&spool, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir("spool directory", &spool, me).unwrap();
        assert_eq!(fs::metadata(&spool).unwrap().mode() & 0o777, 0o700);

        fs::set_permissions(&spool, fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir("spool directory", &spool, me).unwrap_err();
        assert!(matches!(e, FileError::Writable { .. }), "{e}");

        let other = Owner {
            uid: me.uid + 1,
            gid: me.gid,
        };
        fs::set_permissions(&spool, fs::Permissions::from_mode(0o700)).unwrap();
        let e = private_dir("spool directory", &spool, other).unwrap_err();
        assert!(matches!(e, FileError::Owner { .. }), "{e}");

        let link = d.join("link");
        std::os::unix::fs::symlink(&spool, &link).unwrap();
        let e = private_dir("spool directory", &link, me).unwrap_err();
        assert!(matches!(e, FileError::Symlink { .. }), "{e}");
    }

    #[test]
    fn a_second_lock_names_the_first_holder() {
        let d = dir("lock");
        let lock = d.join("spool.lock");
        let first = PidLock::acquire("spool directory", &d, &lock).unwrap();
        assert_eq!(first.path(), lock);
        let e = PidLock::acquire("spool directory", &d, &lock).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        PidLock::acquire("spool directory", &d, &lock).unwrap();
    }
}
