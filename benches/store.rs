//! Criterion benches of the store and mount paths: sha256 hashing, unpacking a generated
//! 3-layer image with 1 and 2 jobs, and overlay mount setup (root only; reported as
//! skipped otherwise).
//!
//! ```text
//! cargo bench --bench store
//! ```

use std::io::Cursor;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use strata::core::{Digest, Hasher};
use strata::overlay::{KernelMounter, MountPlan, Mounter, OverlayOptions};
use strata::store::{LayerSpec, Store, UnpackOptions};

#[path = "../src/cmd/bench/workload.rs"]
mod workload;

fn hashing(c: &mut Criterion) {
    let data = vec![0x5au8; 64 << 20];
    let mut group = c.benchmark_group("sha256");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("64MiB", |b| {
        b.iter(|| {
            let mut h = Hasher::new();
            for chunk in data.chunks(256 * 1024) {
                h.update(chunk);
            }
            h.finish()
        })
    });
    group.finish();
}

/// The generated bench image as (plain tar, gzip blob) per layer.
fn gzip_image(bytes: u64, seed: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    workload::image(bytes, seed)
        .into_iter()
        .map(|t| {
            let gz = workload::gzip(&t);
            (t, gz)
        })
        .collect()
}

fn specs(blobs: &[(Vec<u8>, Vec<u8>)]) -> Vec<LayerSpec<'_>> {
    blobs
        .iter()
        .map(|(tar, gz)| LayerSpec {
            diff_id: Digest::of(tar),
            digest: Some(Digest::of(gz)),
            open: Box::new(move || Ok(Box::new(Cursor::new(gz.clone())) as Box<dyn std::io::Read + Send>)),
        })
        .collect()
}

fn unpack(c: &mut Criterion) {
    let blobs = gzip_image(48_000_000, 7);
    let bytes: u64 = blobs.iter().map(|(t, _)| t.len() as u64).sum();
    let mut group = c.benchmark_group("unpack");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes));
    for jobs in [1, 2] {
        group.bench_with_input(BenchmarkId::new("3-layers-gzip", format!("jobs-{jobs}")), &jobs, |b, &jobs| {
            b.iter_batched(
                || tempfile::tempdir().expect("tempdir"),
                |dir| {
                    let store = Store::open(dir.path().join("store")).expect("store");
                    store.unpack(&specs(&blobs), UnpackOptions { jobs, xattrs: None }, &|_| {}).expect("unpack");
                    dir
                },
                criterion::BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

fn mount(c: &mut Criterion) {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED mount/overlay-setup: needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store")).expect("store");
    let blobs = gzip_image(3_000_000, 9);
    let out = store.unpack(&specs(&blobs), UnpackOptions::default(), &|_| {}).expect("unpack");
    let top = out.chains.last().expect("layers").to_string();
    let spec = store.prepare("bench", Some(&top), Default::default()).expect("prepare");
    let target = dir.path().join("mnt");
    std::fs::create_dir(&target).expect("mkdir");
    let plan = MountPlan::new(&spec, &OverlayOptions::default(), &target).expect("plan");
    c.bench_function("mount/overlay-setup-3-layers", |b| {
        b.iter(|| {
            KernelMounter.mount(&plan, &target).expect("mount");
            KernelMounter.unmount(&target, true).expect("unmount");
        })
    });
}

criterion_group!(benches, hashing, unpack, mount);
criterion_main!(benches);
