//! Where a workload's time goes: with `STRATA_FUSE_STATS=FILE` in its environment the
//! daemon counts every request and the time it spent on it, by opcode, and writes the
//! table to FILE when the mount ends. Off (one branch per request) otherwise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The requests counted, and the table of them in order.
macro_rules! ops {
    ($($op:ident),+ $(,)?) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Op {
            $($op),+
        }
        const ALL: &[Op] = &[$(Op::$op),+];
    };
}

ops!(
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Fsyncdir,
    Statfs,
    Setxattr,
    Getxattr,
    Listxattr,
    Removexattr,
    Access,
    Create,
    Fallocate,
    Lseek,
    CopyFileRange,
);

const OPS: usize = ALL.len();

#[derive(Debug)]
pub(crate) struct Stats {
    file: Option<std::path::PathBuf>,
    counts: [AtomicU64; OPS],
    nanos: [AtomicU64; OPS],
}

impl Stats {
    pub(crate) fn from_env() -> Stats {
        Stats {
            file: std::env::var_os("STRATA_FUSE_STATS").filter(|v| !v.is_empty()).map(Into::into),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            nanos: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Times one request of `op` until the returned guard drops.
    pub(crate) fn time(&self, op: Op) -> Timer<'_> {
        Timer { stats: self, op, start: self.file.is_some().then(Instant::now) }
    }

    /// Writes the table (opcode, count, total and mean µs), busiest first.
    pub(crate) fn write(&self) {
        let Some(file) = &self.file else { return };
        let mut rows: Vec<(String, u64, u64)> = (0..OPS)
            .map(|i| (i, self.counts[i].load(Ordering::Relaxed), self.nanos[i].load(Ordering::Relaxed)))
            .filter(|(_, n, _)| *n > 0)
            .map(|(i, n, ns)| (format!("{:?}", ALL[i]), n, ns))
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.2));
        let mut out = String::from("op\tcount\ttotal_us\tmean_us\n");
        for (op, n, ns) in rows {
            out.push_str(&format!("{op}\t{n}\t{}\t{:.1}\n", ns / 1000, ns as f64 / 1000.0 / n as f64));
        }
        let _ = std::fs::write(file, out);
    }
}

pub(crate) struct Timer<'a> {
    stats: &'a Stats,
    op: Op,
    start: Option<Instant>,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            let i = self.op as usize;
            self.stats.counts[i].fetch_add(1, Ordering::Relaxed);
            self.stats.nanos[i].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }
}
