//! The service socket: made under a temporary name, set to 0600 and renamed into place,
//! so it is never reachable with looser permissions; a stale socket from a daemon that
//! died is replaced, a live one is refused.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::Error;

/// A bound socket, removed by [`Bound::remove`] only while it is still this one.
#[derive(Debug)]
pub struct Bound {
    listener: Option<UnixListener>,
    path: PathBuf,
    ino: (u64, u64),
}

/// Binds the unix socket `path`.
///
/// # Errors
/// A live server answers on it, something other than a socket is there, or a
/// filesystem call fails.
pub fn bind(path: &Path) -> Result<Bound, Error> {
    let fail = |reason: String| Error::Socket { path: path.to_owned(), reason };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| fail(format!("creating {}: {e}", parent.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(fail("another server is listening on it (stop it first)".into()));
            }
        }
        Ok(_) => return Err(fail("exists and is not a socket; refusing to replace it".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(|e| fail(format!("bind: {e}")))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| std::fs::symlink_metadata(path));
    match placed {
        Ok(md) => Ok(Bound { listener: Some(listener), path: path.to_owned(), ino: (md.dev(), md.ino()) }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(fail(e.to_string()))
        }
    }
}

impl Bound {
    /// The listener, for tokio (call from within a runtime).
    ///
    /// # Errors
    /// Already taken, or it cannot be made non-blocking.
    pub fn listener(&self) -> Result<tokio::net::UnixListener, Error> {
        let fail = |reason: String| Error::Socket { path: self.path.clone(), reason };
        let std = self.listener.as_ref().ok_or_else(|| fail("listener already taken".into()))?;
        let std = std.try_clone().map_err(|e| fail(e.to_string()))?;
        std.set_nonblocking(true).map_err(|e| fail(e.to_string()))?;
        tokio::net::UnixListener::from_std(std).map_err(|e| fail(e.to_string()))
    }

    /// Removes the socket file if it is still ours (a newer daemon may have replaced it).
    pub fn remove(mut self) {
        self.listener.take();
        if std::fs::symlink_metadata(&self.path).is_ok_and(|md| (md.dev(), md.ino()) == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
