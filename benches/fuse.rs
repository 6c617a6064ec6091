//! Criterion benches of strata-fuse operations through a real FUSE mount (served by this
//! process): lookup, getattr, readdir, read, copy-up. Root and /dev/fuse only; reported
//! as skipped otherwise. Each request is a round trip through the kernel, so these
//! measure what a process in the container feels, not the handlers alone.
//!
//! ```text
//! sudo cargo bench --bench fuse
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata::fuse::{UnionConfig, mount};

/// Lower files each mode may copy up (a file copies up once).
const COPY_UP_FILES: usize = 5000;

/// Three lower layers sharing a directory of 100 files, a 64 MiB file, and files to copy up.
fn layers(root: &Path) -> Vec<std::path::PathBuf> {
    let lowers: Vec<_> = (0..3).map(|i| root.join(format!("l{i}"))).collect();
    for (i, l) in lowers.iter().enumerate() {
        fs::create_dir_all(l.join("dir")).expect("mkdir");
        for f in 0..100 {
            fs::write(l.join(format!("dir/f{i}-{f}")), b"x").expect("file");
        }
    }
    fs::write(lowers[2].join("big"), vec![1u8; 64 << 20]).expect("big");
    fs::create_dir_all(lowers[2].join("cu")).expect("mkdir");
    for f in 0..2 * COPY_UP_FILES {
        fs::write(lowers[2].join(format!("cu/{f}")), vec![2u8; 64 << 10]).expect("copy-up file");
    }
    lowers
}

fn fuse_ops(c: &mut Criterion) {
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("fuse benches skipped: need root and /dev/fuse");
        return;
    }
    let base = if Path::new("/dev/shm").is_dir() { tempfile::tempdir_in("/dev/shm") } else { tempfile::tempdir() };
    let dir = base.expect("tempdir");
    let lowers = layers(dir.path());
    for sub in ["upper", "work", "mnt"] {
        fs::create_dir(dir.path().join(sub)).expect("mkdir");
    }
    let mnt = dir.path().join("mnt");
    for passthrough in [true, false] {
        let mut config = UnionConfig::new(lowers.clone());
        config.stack.upper = Some(dir.path().join("upper"));
        config.stack.work = Some(dir.path().join("work"));
        config.passthrough = passthrough;
        let mounted = mount(&config, &mnt).expect("mount");
        let tag = if passthrough { "passthrough" } else { "no passthrough" };
        let mut group = c.benchmark_group(format!("strata-fuse ({tag})"));
        group.bench_function("lookup, absent name through 3 layers", |b| {
            b.iter(|| mnt.join("dir/absent").symlink_metadata().is_err())
        });
        group.bench_function("getxattr (not cached by the kernel)", |b| {
            let p = mnt.join("dir/f0-0");
            let mut buf = [0u8; 64];
            b.iter(|| rustix::fs::lgetxattr(&p, "user.none", &mut buf[..]).is_err())
        });
        group.bench_function("opendir + readdir, 300 merged entries", |b| {
            b.iter(|| fs::read_dir(mnt.join("dir")).expect("readdir").count())
        });
        group.throughput(Throughput::Bytes(1 << 20));
        let big = fs::File::open(mnt.join("big")).expect("open");
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        group.bench_function("read 1 MiB", |b| {
            b.iter(|| {
                big.read_exact_at(&mut buf, at).expect("read");
                at = (at + (1 << 20)) % (64 << 20);
            })
        });
        group.finish();
        // Each lower file copies up once: a short warm-up and measurement keep within
        // the files prepared; should criterion still ask for more, the rest is scaled
        // from the mean measured so far.
        let mut group = c.benchmark_group(format!("strata-fuse ({tag})"));
        group.sample_size(10).warm_up_time(Duration::from_millis(20)).measurement_time(Duration::from_millis(400));
        group.throughput(Throughput::Bytes(64 << 10));
        let first = if passthrough { 0 } else { COPY_UP_FILES };
        let mut next = first;
        let mut mean = Duration::ZERO;
        group.bench_function("copy-up of a 64 KiB file (append 1 byte)", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0u32;
                while u64::from(done) < iters && next < first + COPY_UP_FILES {
                    let p = mnt.join(format!("cu/{next}"));
                    next += 1;
                    let start = Instant::now();
                    let mut f = OpenOptions::new().append(true).open(&p).expect("open copies up");
                    f.write_all(b"+").expect("append");
                    drop(f);
                    total += start.elapsed();
                    done += 1;
                }
                if done > 0 {
                    mean = total / done;
                }
                mean.mul_f64(iters as f64)
            })
        });
        group.finish();
        drop(big);
        mounted.unmount().expect("unmount");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = fuse_ops
}
criterion_main!(benches);
