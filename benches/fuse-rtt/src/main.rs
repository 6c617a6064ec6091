//! What one FUSE request costs on this machine, by transport.
//!
//! A minimal filesystem (a root dir holding one file `f`; every getxattr answers
//! ENODATA) is mounted, and a client thread calls `getxattr("f", "user.x")` in a loop:
//! each call is exactly one round trip through the daemon. The daemon serves it three
//! ways:
//!
//! - `dev, 1 thread` / `dev, 4 threads`: the classic loop, `read(/dev/fuse)` then
//!   `writev` (what fuser, and so strata-fuse, use);
//! - `io_uring`: FUSE-over-io_uring (Linux 6.14+, `fuse.enable_uring`): the kernel puts
//!   each request on the ring queue of the CPU the caller runs on, served by a thread
//!   pinned to that CPU, and the answer and the wait for the next request are one
//!   `io_uring_enter`.
//!
//! Each is timed with the client free to run on any CPU and pinned to CPU 0.
//! `FUSE_RTT_WORK_US=N` makes each answer take N µs of CPU (a real filesystem's work);
//! `FUSE_RTT_CLIENT=PROG` also runs PROG with the file's path (another process as the
//! client: a script timing its own calls).
//!
//! ```text
//! cd benches/fuse-rtt && cargo build --release
//! echo Y > /sys/module/fuse/parameters/enable_uring    # else the io_uring row is skipped
//! sudo target/release/fuse-rtt [ROUND_TRIPS]
//! ```
//!
//! Written by hand, outside strata's workspace: no Rust crate speaks FUSE-over-io_uring
//! yet (fuser 0.18 reads /dev/fuse only), and this measures what the transport would
//! give before strata-fuse is built on it.

use std::io::IoSlice;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const GETXATTR: u32 = 22;
const INIT: u32 = 26;
const BATCH_FORGET: u32 = 42;

const IN_HEADER: usize = 40;
const OUT_HEADER: usize = 16;
/// `fuse_uring_req_header`: in/out header (128), per-op header (128), `fuse_uring_ent_in_out` (32).
const RING_HEADER: usize = 288;
const PAYLOAD: usize = 1 << 20;
const MAX_WRITE: u32 = 128 * 1024;
const FUSE_INIT_EXT: u64 = 1 << 30;
const FUSE_OVER_IO_URING: u64 = 1 << 41;
const URING_REGISTER: u32 = 1;
const URING_COMMIT_AND_FETCH: u32 = 2;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// `fuse_attr` (88 bytes): node 1 is the root dir, node 2 the file.
fn attr(node: u64) -> Vec<u8> {
    let mut a = Vec::with_capacity(88);
    a.extend_from_slice(&node.to_le_bytes()); // ino
    a.extend_from_slice(&[0; 40]); // size, blocks, atime, mtime, ctime
    a.extend_from_slice(&[0; 12]); // nsecs
    let mode: u32 = if node == 1 { 0o040755 } else { 0o100644 };
    for v in [mode, 1, 0, 0, 0, 4096, 0] {
        // mode, nlink, uid, gid, rdev, blksize, flags
        a.extend_from_slice(&v.to_le_bytes());
    }
    a
}

/// The answer to one request: `None` for those that take none (forgets), else the
/// errno (0 for success) and the reply body.
fn answer(opcode: u32, node: u64, payload: &[u8]) -> Option<(i32, Vec<u8>)> {
    const ONE_HOUR: u64 = 3600;
    Some(match opcode {
        FORGET | BATCH_FORGET => return None,
        GETATTR => {
            let mut out = ONE_HOUR.to_le_bytes().to_vec(); // attr_valid
            out.extend_from_slice(&[0; 8]); // nsec, dummy
            out.extend_from_slice(&attr(node));
            (0, out)
        }
        LOOKUP if node == 1 && payload.starts_with(b"f\0") => {
            let mut out = Vec::new();
            for v in [2, 0, ONE_HOUR, ONE_HOUR] {
                // nodeid, generation, entry_valid, attr_valid
                out.extend_from_slice(&u64::to_le_bytes(v));
            }
            out.extend_from_slice(&[0; 8]); // nsecs
            out.extend_from_slice(&attr(2));
            (0, out)
        }
        LOOKUP => (-Errno::NOENT.raw_os_error(), Vec::new()),
        GETXATTR => {
            if let Some(us) = std::env::var("FUSE_RTT_WORK_US").ok().and_then(|v| v.parse::<u64>().ok()) {
                let t = Instant::now();
                while t.elapsed().as_micros() < u128::from(us) {}
            }
            (-Errno::NODATA.raw_os_error(), Vec::new())
        }
        _ => (-Errno::NOSYS.raw_os_error(), Vec::new()),
    })
}

fn out_header(len: usize, error: i32, unique: u64) -> [u8; OUT_HEADER] {
    let mut h = [0; OUT_HEADER];
    h[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    h[4..8].copy_from_slice(&error.to_le_bytes());
    h[8..16].copy_from_slice(&unique.to_le_bytes());
    h
}

fn reply(dev: &OwnedFd, unique: u64, error: i32, body: &[u8]) {
    let h = out_header(OUT_HEADER + body.len(), error, unique);
    // ENOENT: the request was interrupted meanwhile.
    let _ = rustix::io::writev(dev, &[IoSlice::new(&h), IoSlice::new(body)]);
}

/// Answers INIT, offering FUSE-over-io_uring when `uring`.
fn handshake(dev: &OwnedFd, uring: bool) -> std::io::Result<()> {
    let mut buf = vec![0; PAYLOAD + 4096];
    let n = rustix::io::read(dev, &mut buf)?;
    let req = &buf[..n];
    assert_eq!(u32_at(req, 4), INIT, "the first request is INIT");
    let (unique, minor) = (u64_at(req, 8), u32_at(req, IN_HEADER + 4));
    let kernel_flags = u64::from(u32_at(req, IN_HEADER + 12)) | (u64::from(u32_at(req, IN_HEADER + 16)) << 32);
    let mut flags = FUSE_INIT_EXT;
    if uring {
        flags |= kernel_flags & FUSE_OVER_IO_URING;
    }
    let mut out = Vec::with_capacity(64);
    for v in [7, minor, 0, flags as u32] {
        // major, minor, max_readahead, flags
        out.extend_from_slice(&u32::to_le_bytes(v));
    }
    out.extend_from_slice(&[16, 0, 12, 0]); // max_background, congestion_threshold
    out.extend_from_slice(&MAX_WRITE.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // time_gran
    out.extend_from_slice(&[0; 4]); // max_pages, map_alignment
    out.extend_from_slice(&((flags >> 32) as u32).to_le_bytes());
    out.extend_from_slice(&[0; 28]); // max_stack_depth, unused
    reply(dev, unique, 0, &out);
    Ok(())
}

/// The classic transport: read a request, write its answer.
fn serve_dev(dev: Arc<OwnedFd>) {
    let mut buf = vec![0; PAYLOAD + 4096];
    loop {
        let n = match rustix::io::read(&*dev, &mut buf) {
            Ok(n) => n,
            Err(Errno::INTR | Errno::NOENT | Errno::AGAIN) => continue,
            Err(_) => return, // ENODEV: unmounted
        };
        let req = &buf[..n];
        let (opcode, unique, node) = (u32_at(req, 4), u64_at(req, 8), u64_at(req, 16));
        // The classic transport sends the per-op header and the names in one buffer;
        // only LOOKUP reads past the header here (its name has no op header before it).
        if let Some((error, body)) = answer(opcode, node, &req[IN_HEADER..]) {
            reply(&dev, unique, error, &body);
        }
    }
}

/// One ring entry's buffers; the kernel writes requests into them, so they stay put.
struct Entry {
    header: Box<[u8; RING_HEADER]>,
    payload: Box<[u8]>,
    iov: Box<[libc_iovec; 2]>,
}

#[repr(C)]
#[allow(non_camel_case_types)]
struct libc_iovec {
    base: *mut u8,
    len: usize,
}

fn ring_command(dev: &OwnedFd, cmd_op: u32, qid: u16, commit_id: u64, entry: &mut Entry, tag: u64) -> squeue::Entry128 {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_le_bytes());
    cmd[16..18].copy_from_slice(&qid.to_le_bytes());
    let sqe = opcode::UringCmd80::new(types::Fd(dev.as_raw_fd()), cmd_op)
        .cmd(cmd)
        .addr(Some(entry.iov.as_mut_ptr() as u64))
        .build()
        .user_data(tag);
    // io-uring 0.7 has no setter for `len`, which FUSE reads as the iovec count (2).
    // SAFETY: Entry128 is the 128-byte `io_uring_sqe` (repr(C)); `len` is at offset 24.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    raw[24..28].copy_from_slice(&2u32.to_le_bytes());
    unsafe { std::mem::transmute(raw) }
}

/// FUSE-over-io_uring: the queue of CPU `qid`, served by a thread pinned there.
fn serve_ring(dev: Arc<OwnedFd>, qid: u16, depth: usize) {
    let mut cpus = rustix::thread::CpuSet::new();
    cpus.set(qid.into());
    let _ = rustix::thread::sched_setaffinity(None, &cpus);
    let mut ring: IoUring<squeue::Entry128, cqueue::Entry> =
        IoUring::builder().build(2 * depth as u32).expect("an io_uring with 128-byte entries");
    let mut entries: Vec<Entry> = (0..depth)
        .map(|_| {
            let mut header = Box::new([0u8; RING_HEADER]);
            let mut payload = vec![0u8; PAYLOAD].into_boxed_slice();
            let iov = Box::new([
                libc_iovec { base: header.as_mut_ptr(), len: RING_HEADER },
                libc_iovec { base: payload.as_mut_ptr(), len: PAYLOAD },
            ]);
            Entry { header, payload, iov }
        })
        .collect();
    for (i, e) in entries.iter_mut().enumerate() {
        let sqe = ring_command(&dev, URING_REGISTER, qid, 0, e, i as u64);
        // SAFETY: the entry's buffers live in `entries` until this thread returns.
        unsafe { ring.submission().push(&sqe).expect("room in the submission queue") };
    }
    loop {
        if ring.submit_and_wait(1).is_err() {
            return;
        }
        let done: Vec<(u64, i32)> = ring.completion().map(|c| (c.user_data(), c.result())).collect();
        for (tag, result) in done {
            if result < 0 {
                if result != -Errno::NOTCONN.raw_os_error() && result != -Errno::CANCELED.raw_os_error() {
                    eprintln!("ring {qid}: {}", Errno::from_raw_os_error(-result));
                }
                return; // unmounted (or registration refused)
            }
            let e = &mut entries[tag as usize];
            let (opcode, unique, node) = (u32_at(&e.header[..], 4), u64_at(&e.header[..], 8), u64_at(&e.header[..], 16));
            let commit_id = u64_at(&e.header[..], 256 + 8);
            let payload_len = u32_at(&e.header[..], 256 + 16) as usize;
            let (error, body) =
                answer(opcode, node, &e.payload[..payload_len]).unwrap_or((-Errno::NOSYS.raw_os_error(), Vec::new()));
            e.header[..OUT_HEADER].copy_from_slice(&out_header(OUT_HEADER + body.len(), error, unique));
            e.payload[..body.len()].copy_from_slice(&body);
            e.header[256 + 16..256 + 20].copy_from_slice(&(body.len() as u32).to_le_bytes());
            let sqe = ring_command(&dev, URING_COMMIT_AND_FETCH, qid, commit_id, e, tag);
            // SAFETY: as above.
            unsafe { ring.submission().push(&sqe).expect("room in the submission queue") };
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Dev(usize),
    Uring,
}

/// Mounts the filesystem at `dir` and starts its threads.
fn mount(dir: &Path, transport: Transport) -> std::io::Result<()> {
    let dev = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    let data = CString::new(format!("fd={},rootmode=40000,user_id=0,group_id=0,default_permissions", dev.as_raw_fd()))
        .expect("no NUL");
    rustix::mount::mount("fuse-rtt", dir, "fuse", rustix::mount::MountFlags::NOSUID, Some(data.as_c_str()))?;
    handshake(&dev, transport == Transport::Uring)?;
    let dev = Arc::new(dev);
    let threads = match transport {
        Transport::Dev(n) => n,
        Transport::Uring => 1, // forgets and requests sent before the ring is ready
    };
    for _ in 0..threads {
        let dev = Arc::clone(&dev);
        std::thread::spawn(move || serve_dev(dev));
    }
    if transport == Transport::Uring {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for qid in 0..cpus {
            let dev = Arc::clone(&dev);
            std::thread::spawn(move || serve_ring(dev, qid as u16, 2));
        }
    }
    Ok(())
}

/// Microseconds per getxattr round trip, the client pinned to `cpu` if given.
fn time_round_trips(file: &Path, n: usize, cpu: Option<usize>) -> f64 {
    let file = file.to_owned();
    std::thread::spawn(move || {
        if let Some(cpu) = cpu {
            let mut set = rustix::thread::CpuSet::new();
            set.set(cpu);
            let _ = rustix::thread::sched_setaffinity(None, &set);
        }
        let mut buf = [0u8; 64];
        let mut call = || {
            let r = rustix::fs::getxattr(&file, "user.x", &mut buf[..]);
            assert_eq!(r, Err(Errno::NODATA), "each getxattr reaches the daemon");
        };
        for _ in 0..n / 10 {
            call();
        }
        let started = Instant::now();
        for _ in 0..n {
            call();
        }
        started.elapsed().as_secs_f64() * 1e6 / n as f64
    })
    .join()
    .expect("client thread")
}

fn uring_enabled() -> bool {
    std::fs::read_to_string("/sys/module/fuse/parameters/enable_uring").is_ok_and(|v| v.trim() == "Y")
}

fn main() -> std::io::Result<()> {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    if !rustix::process::geteuid().is_root() {
        eprintln!("fuse-rtt mounts a filesystem: run it as root");
        std::process::exit(2);
    }
    let base = PathBuf::from(std::env::temp_dir()).join(format!("fuse-rtt-{}", std::process::id()));
    println!("{:<18} {:>14} {:>14}", "transport", "any CPU (us)", "CPU 0 (us)");
    for (label, transport) in
        [("dev, 1 thread", Transport::Dev(1)), ("dev, 4 threads", Transport::Dev(4)), ("io_uring", Transport::Uring)]
    {
        if transport == Transport::Uring && !uring_enabled() {
            println!("{label:<18} skipped: echo Y > /sys/module/fuse/parameters/enable_uring");
            continue;
        }
        let dir = base.join(label.replace([' ', ','], ""));
        std::fs::create_dir_all(&dir)?;
        mount(&dir, transport)?;
        let file = dir.join("f");
        let free = time_round_trips(&file, n, None);
        let pinned = time_round_trips(&file, n, Some(0));
        println!("{label:<18} {free:>14.1} {pinned:>14.1}");
        if let Some(client) = std::env::var_os("FUSE_RTT_CLIENT") {
            let out = std::process::Command::new(client).arg(&file).output()?;
            println!("  external client: {}", String::from_utf8_lossy(&out.stdout).trim());
        }
        rustix::mount::unmount(&dir, rustix::mount::UnmountFlags::DETACH)?;
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
