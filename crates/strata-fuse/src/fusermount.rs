//! Unprivileged mounting through the setuid `fusermount3` helper.
//!
//! `fuser` mounts directly when it can open `/dev/fuse` and falls back to the helper
//! only when the device is missing; hosts that keep `/dev/fuse` root-only (containers
//! often do) but ship a setuid `fusermount3` would then refuse an unprivileged mount
//! that libfuse-based tools make. This speaks the helper's protocol (a socket in
//! `_FUSE_COMMFD`, the device fd back by `SCM_RIGHTS`) with rustix's safe wrappers; the
//! session then runs on that fd (`fuser::Session::from_fd`).

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketFlags, SocketType, recvmsg, socketpair,
};

/// Mounts FUSE at `mountpoint` with `options` (fusermount3's `-o` string) and returns
/// the `/dev/fuse` fd to serve it on.
pub(crate) fn mount(mountpoint: &Path, options: &str) -> io::Result<OwnedFd> {
    // The helper's end must survive exec: no CLOEXEC on it (ours closes with us).
    let (ours, theirs) = socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::empty(), None)?;
    let out = Command::new(helper())
        .arg("-o")
        .arg(options)
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("running fusermount3 (apt install fuse3): {e}")));
    drop(theirs);
    let child = out?;
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = recvmsg(&ours, &mut [IoSliceMut::new(&mut byte)], &mut control, RecvFlags::CMSG_CLOEXEC);
    let mut fd = None;
    if received.is_ok() {
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = message {
                fd = fd.or_else(|| fds.next());
            }
        }
    }
    let output = child.wait_with_output()?;
    match fd {
        Some(fd) if output.status.success() => Ok(fd),
        _ => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("fusermount3 refused: {}", String::from_utf8_lossy(&output.stderr).trim()),
        )),
    }
}

/// Unmounts a mount made by [`mount`] (lazily, as the helper does for libfuse).
pub(crate) fn unmount(mountpoint: &Path) -> io::Result<()> {
    let out = Command::new(helper()).args(["-u", "-z", "--"]).arg(mountpoint).stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("fusermount3 -u: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

fn helper() -> &'static str {
    if Path::new("/usr/bin/fusermount3").exists() || !Path::new("/bin/fusermount").exists() {
        "fusermount3"
    } else {
        "fusermount"
    }
}
