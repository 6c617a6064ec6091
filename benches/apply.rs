//! Criterion benches of the apply engine: a many-small-files layer and a few-large-files
//! layer, gzip and zstd, applied flat into a fresh directory each iteration.
//!
//! ```text
//! cargo bench --bench apply
//! ```
//! Throughput is reported in uncompressed bytes per second. The side-by-side figures
//! against GNU tar are in the README (measured with the release binary).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use strata::core::{ApplyBuilder, Mode};

#[path = "../src/cmd/bench/workload.rs"]
mod workload;

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group.sample_size(10);
    let applier = ApplyBuilder::new(Mode::Flat).build().expect("options");
    for (name, shape, size) in
        [("small-files", workload::Shape::SmallFiles, 32 << 20), ("large-files", workload::Shape::LargeFiles, 64 << 20)]
    {
        let tar = workload::layer(shape, size, 42);
        group.throughput(Throughput::Bytes(tar.len() as u64));
        for (codec, blob) in [("gzip", workload::gzip(&tar)), ("zstd", workload::zstd(&tar))] {
            group.bench_with_input(BenchmarkId::new(name, codec), &blob, |b, blob| {
                b.iter_batched(
                    || tempfile::tempdir().expect("tempdir"),
                    |dir| {
                        applier.apply(&blob[..], &dir.path().join("rootfs")).expect("apply");
                        dir
                    },
                    criterion::BatchSize::PerIteration,
                );
            });
        }
    }
    group.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
