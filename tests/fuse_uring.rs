//! strata-fuse over FUSE-over-io_uring: requests are served by the ring thread of the
//! caller's CPU, the mount behaves the same, and it unmounts cleanly; `uring=off` keeps
//! the `/dev/fuse` transport.

use std::fs;
use std::path::Path;

use crate::util::{FuseDaemon, require_fuse_uring, start_strata_fuse};

/// A strata-fuse daemon in the foreground over one lower dir, with `extra` options.
fn mount(dir: &Path, extra: &str) -> FuseDaemon {
    for d in ["lower", "upper", "work", "mnt"] {
        fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    fs::write(dir.join("lower/file"), b"lower data").expect("file");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}{extra}",
        dir.join("lower").display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    start_strata_fuse(&[], &opts, &dir.join("mnt"))
}

/// Voluntary context switches of the daemon's threads, by thread name.
fn switches_by_thread(pid: u32) -> Vec<(String, u64)> {
    let mut threads = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let task = task.expect("task").path();
        let name = fs::read_to_string(task.join("comm")).expect("comm").trim().to_owned();
        let status = fs::read_to_string(task.join("status")).expect("status");
        let switches = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("voluntary_ctxt_switches");
        threads.push((name, switches));
    }
    threads
}

/// `n` getxattr calls on `file` from a thread pinned to CPU 0: each one request.
fn round_trips_from_cpu0(file: &Path, n: usize) {
    let file = file.to_owned();
    std::thread::spawn(move || {
        let mut cpu0 = rustix::thread::CpuSet::new();
        cpu0.set(0);
        rustix::thread::sched_setaffinity(None, &cpu0).expect("pin to CPU 0");
        let mut buf = [0u8; 64];
        for _ in 0..n {
            let r = rustix::fs::lgetxattr(&file, "user.strata-test", &mut buf[..]);
            assert_eq!(r, Err(rustix::io::Errno::NODATA), "getxattr of a missing name");
        }
    })
    .join()
    .expect("client thread");
}

/// Waits (up to 10 s) until CPU 0's ring threads serve requests: the mount point
/// appears at FUSE_INIT, before the daemon has started its ring threads and before
/// they have registered with the kernel, which until then sends requests over
/// `/dev/fuse`. A ring that never comes up fails the assertions that follow.
fn wait_for_the_ring(pid: u32, file: &Path) {
    let ring0 = |threads: &[(String, u64)]| -> u64 {
        threads.iter().filter(|(name, _)| name.starts_with("fuser-ring-0-")).map(|(_, n)| n).sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let before = ring0(&switches_by_thread(pid));
        round_trips_from_cpu0(file, 100);
        if ring0(&switches_by_thread(pid)) >= before + 90 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn unmount(daemon: FuseDaemon) {
    // The ring threads end with the mount, so the daemon exits.
    let status = daemon.unmount();
    assert!(status.success(), "strata-fuse exited with {status}");
}

#[test]
fn privileged_fuse_serves_requests_on_the_callers_cpu_over_io_uring() {
    if !require_fuse_uring("privileged_fuse_serves_requests_on_the_callers_cpu_over_io_uring") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = mount(dir.path(), "");
    let pid = daemon.id();
    let mnt = dir.path().join("mnt");
    wait_for_the_ring(pid, &mnt.join("file"));
    let before = switches_by_thread(pid);
    let cpus = fs::read_to_string("/sys/devices/system/cpu/possible").expect("possible cpus");
    let last: usize = cpus.trim().rsplit(['-', ',']).next().and_then(|c| c.parse().ok()).expect("cpu id");
    for cpu in 0..=last {
        let queue = format!("fuser-ring-{cpu}-");
        assert!(before.iter().any(|(name, _)| name.starts_with(&queue)), "ring threads for CPU {cpu}: {before:?}");
    }
    round_trips_from_cpu0(&mnt.join("file"), 2000);
    let after = switches_by_thread(pid);
    let grew = |prefix: &str| -> u64 {
        after
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, n)| n - before.iter().find(|(b, _)| b == name).map_or(0, |(_, b)| *b))
            .sum()
    };
    // Each request wakes the thread that serves it once: CPU 0's ring threads served the
    // calls, the /dev/fuse threads next to none.
    let ring0 = grew("fuser-ring-0-");
    let classic = grew("fuser-") - grew("fuser-ring-");
    assert!(ring0 >= 1900, "CPU 0's ring threads woke {ring0} times for 2000 requests");
    assert!(classic < 100, "the /dev/fuse threads woke {classic} times for requests the ring served");
    // The mount behaves as over /dev/fuse: copy-up, create, rename, remove.
    fs::write(mnt.join("file"), b"changed").expect("write through");
    fs::write(mnt.join("new"), b"new").expect("create");
    fs::rename(mnt.join("new"), mnt.join("renamed")).expect("rename");
    assert_eq!(fs::read(mnt.join("renamed")).expect("read"), b"new");
    fs::remove_file(mnt.join("renamed")).expect("unlink");
    assert_eq!(fs::read(dir.path().join("upper/file")).expect("upper copy"), b"changed");
    assert_eq!(fs::read(dir.path().join("lower/file")).expect("lower"), b"lower data");
    unmount(daemon);

    // uring=off: no ring threads; every request over /dev/fuse.
    let off = tempfile::tempdir().expect("tempdir");
    let daemon = mount(off.path(), ",uring=off");
    round_trips_from_cpu0(&off.path().join("mnt/file"), 200);
    let threads = switches_by_thread(daemon.id());
    assert!(!threads.iter().any(|(name, _)| name.starts_with("fuser-ring-")), "uring=off starts no ring: {threads:?}");
    assert_eq!(fs::read(off.path().join("mnt/file")).expect("read"), b"lower data");
    unmount(daemon);
}
