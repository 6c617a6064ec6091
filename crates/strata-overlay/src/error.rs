//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong mounting or unmounting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The mount spec cannot be mounted as asked.
    #[error("cannot mount at {target}: {reason}")]
    Plan {
        /// The mount point.
        target: PathBuf,
        /// Why.
        reason: String,
    },

    /// A mount syscall failed; `kernel` holds what the kernel logged for the
    /// filesystem context (overlayfs explains its refusals there).
    #[error("{op} at {target} failed{}", kernel_log(.kernel))]
    Mount {
        /// The syscall (`fsconfig lowerdir+`, `mount(2)`, ...).
        op: String,
        /// The mount point.
        target: PathBuf,
        /// The kernel's fs-context messages.
        kernel: Vec<String>,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Unmounting failed.
    #[error("unmounting {target} failed")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn kernel_log(lines: &[String]) -> String {
    if lines.is_empty() {
        // overlayfs logs many refusals only to the kernel log.
        " (dmesg may say why)".to_owned()
    } else {
        format!(" (kernel: {})", lines.join("; "))
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
