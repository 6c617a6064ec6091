//! A second user racing the apply (the CVE-2018-15664 class). A layer makes a 0777
//! directory full of setuid FIFOs and files; while `apply` runs as root, a thread with
//! the credentials of uid 1000 swaps each new node with a symlink to a root-owned file
//! outside the target (`renameat2(RENAME_EXCHANGE)`), over and over. A mode, owner or
//! time change made through a path instead of the node's own fd would land on the
//! victim (before the fix, a 0755 binary became `-rwsr-xr-x`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustix::fs::{CWD, RenameFlags};
use rustix::process::{Gid, Uid};
use strata::core::tar::Entry;
use strata::core::{ApplyBuilder, Mode};

use crate::util::{layer, require_privileged};

const NODES: usize = 3000;
const ATTACKER: u32 = 1000;

/// As uid 1000 (this thread only: Linux credentials are per thread, and rustix's
/// `set_thread_*` do not broadcast them as libc's `setuid` does), swap every
/// `dir/nodeN` with a symlink to `victim` until `stop`; counts the swaps that worked.
fn swapper(dir: &Path, victim: &Path, stop: &AtomicBool, swaps: &AtomicU64) {
    rustix::thread::set_thread_groups(&[]).expect("drop groups");
    rustix::thread::set_thread_res_gid(Gid::from_raw(ATTACKER), Gid::from_raw(ATTACKER), Gid::from_raw(ATTACKER))
        .expect("setresgid");
    rustix::thread::set_thread_res_uid(Uid::from_raw(ATTACKER), Uid::from_raw(ATTACKER), Uid::from_raw(ATTACKER))
        .expect("setresuid");
    while !stop.load(Ordering::Relaxed) {
        for i in 0..NODES {
            let node = dir.join(format!("node{i}"));
            let bait = dir.join(format!(".bait{i}"));
            // Fails until the layer made `dir`; then the bait stays for the exchanges.
            let _ = rustix::fs::symlink(victim, &bait);
            if rustix::fs::renameat_with(CWD, &node, CWD, &bait, RenameFlags::EXCHANGE).is_ok() {
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[test]
fn privileged_second_user_swapping_nodes_for_symlinks_changes_nothing_outside() {
    if !require_privileged("privileged_second_user_swapping_nodes_for_symlinks_changes_nothing_outside") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    // The attacker must reach the shared directory, as in a real shared target.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
    let victim = tmp.path().join("victim-binary");
    std::fs::write(&victim, b"#!/bin/sh\n").expect("victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).expect("chmod victim");
    let before = std::fs::metadata(&victim).expect("stat victim");

    let mut entries = vec![(Entry::dir("shared", 0o777), &b""[..])];
    for i in 0..NODES {
        let path = format!("shared/node{i}");
        let mut entry = if i % 2 == 0 { Entry::fifo(&path) } else { Entry::file(&path, 0o4755) };
        entry.mode = 0o4755;
        entries.push((entry.owner(0, 0).mtime(1, 0), &b""[..]));
    }
    let tar = layer(&entries);
    let target = tmp.path().join("target");
    std::fs::create_dir(&target).expect("target");

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let attacker = {
        let (dir, victim, stop, swaps) = (target.join("shared"), victim.clone(), Arc::clone(&stop), Arc::clone(&swaps));
        std::thread::spawn(move || swapper(&dir, &victim, &stop, &swaps))
    };
    // Several rounds: each gives the swapper a fresh set of nodes to race.
    let mut results = Vec::new();
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(target.join("shared"));
        results.push(ApplyBuilder::new(Mode::Flat).build().expect("options").apply(&tar[..], &target));
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().expect("swapper thread");

    let after = std::fs::metadata(&victim).expect("stat victim");
    assert_eq!(
        (after.mode(), after.uid(), after.gid(), after.mtime()),
        (before.mode(), before.uid(), before.gid(), before.mtime()),
        "the victim outside the target changed (mode {:o} -> {:o})",
        before.mode(),
        after.mode()
    );
    assert_eq!(std::fs::read(&victim).expect("read victim"), b"#!/bin/sh\n");
    // The race ran: the attacker did swap nodes while the applies ran (an apply may fail
    // when it finds a symlink where its node was; it must never act on the victim).
    assert!(swaps.load(Ordering::Relaxed) > 0, "the swapper never won a rename; the test raced nothing");
    for result in &results {
        if let Err(err) = result {
            let msg = err.to_string();
            assert!(msg.contains("shared/node"), "an apply failed for another reason: {msg}");
        }
    }
}
