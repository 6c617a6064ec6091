//! `strata bench`: strata side by side with the tools people use today, on the same
//! bytes, in one run, reported as ratios.

mod commit;
mod containerd;
mod mounts;
mod report;
mod runner;
pub mod workload;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::json;
use strata_core::{Compression, Digest};
use strata_image::layout::{LayerBlob, LayoutWriter, REF_NAME};
use strata_image::{Image, Selector};

use runner::{Skipped, Tool};

/// Benchmark strata against the tools people use today.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// Unpacking an image: strata (store and flattened) vs containerd's overlayfs
    /// snapshotter, GNU tar with gzip, pigz and zstd per layer and `umoci unpack`, plus
    /// the limits (decompression alone, extraction of already-decompressed tars).
    Unpack(UnpackBench),
    /// Working through the mount (alias: copy-up): kernel overlayfs (`strata mount`'s
    /// default) vs strata-fuse with and without passthrough vs fuse-overlayfs on the same
    /// layers — cold and warm reads, copy-up of large files, find and stat of every
    /// file, untarring small files (with and without sync), rm -rf of lower and
    /// of new files (40 small files per MB of --size). Needs root.
    #[command(alias = "copy-up")]
    Mount(MountBench),
    /// Saving a container's changes as a layer: `strata commit` vs containerd's `ctr
    /// snapshots diff` on the same base image and the same changes (a tree of small
    /// files), time and layer size. Needs root.
    Commit(CommitBench),
}

/// Options every bench shares.
#[derive(Debug, clap::Args)]
struct Common {
    /// Size in MB of file data in the generated image (3 layers with whiteouts and an
    /// opaque dir: many small files, a few large ones, small changes on top).
    #[arg(long, default_value_t = 256)]
    size: u64,
    /// Seed of the generated image (same seed, same bytes).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Measured rounds per row (after one warm-up each); the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Drop the page cache before every run (root only): cold-cache numbers.
    #[arg(long)]
    drop_caches: bool,
    /// Where to put the workload and scratch dirs [default: $TMPDIR]; use a path on the
    /// filesystem you care about (tmpfs measures the CPU side only).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Also write an SVG bar chart of MB/s here.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

impl Common {
    /// Checks the options and makes the bench's temporary dir.
    fn start(&self) -> anyhow::Result<TempDir> {
        if self.runs == 0 {
            bail!("--runs must be at least 1");
        }
        let base = self.dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base)?;
        tempfile_dir(&base)
    }

    fn say(&self, msg: &str) {
        if !self.json {
            eprintln!("bench: {msg}");
        }
    }

    /// Prints the results (table or JSON) and writes the chart.
    fn emit(
        &self,
        results: &[runner::Measured],
        skipped: &[Skipped],
        title: &str,
        workload: serde_json::Value,
    ) -> anyhow::Result<()> {
        if let Some(svg) = &self.svg {
            let title = format!("{title}, median of {}", self.runs);
            std::fs::write(svg, report::svg(results, &title)).with_context(|| format!("writing {}", svg.display()))?;
        }
        let mut out = io::stdout().lock();
        if self.json {
            writeln!(out, "{}", report::json(results, skipped, workload))?;
        } else {
            writeln!(out, "{}", report::table(results, skipped))?;
            writeln!(out, "workload: {workload}")?;
        }
        Ok(())
    }
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sudo strata bench mount\n  sudo strata bench mount --size 1024 --runs 5 --json\n  sudo strata bench mount --dir /dev/shm     # tmpfs: the CPU side only\n\nWith FUSE-over-io_uring on (Linux 6.14+: echo Y > /sys/module/fuse/parameters/enable_uring)\nstrata-fuse serves requests over it, and a `uring=off` row shows what it gains."
)]
struct MountBench {
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  strata bench unpack                      # a generated 256 MB, 3-layer image\n  strata bench unpack --size 1024 --runs 5 --svg unpack.svg\n  strata bench unpack alpine.tar --json    # your own image (OCI layout or docker save)"
)]
struct UnpackBench {
    /// Your image (OCI layout or docker-save archive); default: a generated one.
    image: Option<PathBuf>,
    /// `--jobs` for strata's store unpack [default: the number of CPUs].
    #[arg(long)]
    jobs: Option<u16>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  sudo strata bench commit\n  sudo strata bench commit --size 512 --runs 5 --json")]
struct CommitBench {
    #[command(flatten)]
    common: Common,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Unpack(args) => unpack(args),
        BenchCommand::Mount(args) => mount(args),
        BenchCommand::Commit(args) => commit_bench(args),
    }
}

fn commit_bench(args: CommitBench) -> anyhow::Result<()> {
    let c = &args.common;
    if !rustix::process::geteuid().is_root() {
        bail!("strata bench commit mounts overlayfs and runs a private containerd: run it as root");
    }
    let exe = std::env::current_exe().context("locating the strata binary")?;
    let work = c.start()?;
    c.say("preparing the workload");
    let (_, layout) = generated_layout(c, &work.0)?;
    let dir = work.0.join("layers");
    let archive = work.0.join("image.tar");
    let status = Command::new("tar").arg("-C").arg(&layout).arg("-cf").arg(&archive).arg(".").status();
    if !status.is_ok_and(|s| s.success()) {
        bail!("tar could not archive the image layout");
    }
    // The container's changes: half the image's size again, as small files.
    let changes = workload::layer_under(workload::Shape::SmallFiles, c.size * 500_000, c.seed + 5, "srv/changes", &[]);
    let changes_tar = dir.join("changes.tar");
    std::fs::write(&changes_tar, &changes)?;
    let (tools, mut skipped, sizes) = commit::tools(&exe, &layout, &archive, &changes_tar, changes.len() as u64);
    let (results, failed) = runner::run_all(&tools, c.runs, &work.0.join("scratch"), c.drop_caches, &|m| c.say(m))?;
    skipped.extend(failed);
    let sizes = sizes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let layer_bytes: serde_json::Map<String, serde_json::Value> =
        sizes.into_iter().map(|(row, bytes)| (row, json!(bytes))).collect();
    let description = json!({"generated": {"size_mb": c.size, "seed": c.seed}, "changes_bytes": changes.len(),
        "changes_entries": count_entries(&changes), "layer_bytes": layer_bytes, "runs": c.runs,
        "dir": work.0.display().to_string()});
    c.emit(&results, &skipped, "strata bench commit: MB/s of changes written as a gzip layer", description)
}

fn mount(args: MountBench) -> anyhow::Result<()> {
    let c = &args.common;
    let work = c.start()?;
    c.say("preparing the workload");
    let (tars, layout) = generated_layout(c, &work.0)?;
    let dir = work.0.join("layers");
    // Small files to write through the mount, as a package manager does: 10,240 at the
    // default size.
    let files = c.size * 40;
    let tree = workload::small_tree(files, c.seed + 3);
    let tree_tar = dir.join("tree.tar");
    std::fs::write(&tree_tar, &tree)?;
    let store = std::sync::Arc::new(strata_store::Store::open(work.0.join("store"))?);
    let image = Image::open(&layout, &Selector::default())?;
    let outcome = store.unpack(&strata::rootfs::layer_specs(&image, None), Default::default(), &|_| {})?;
    let top = outcome.chains.last().map(ToString::to_string).context("the bench image has layers")?;
    let paths = mounts::Paths {
        large_dir: "opt/models",
        large_bytes: tars[1].len() as u64,
        small_dir: "usr/lib",
        tree_tar: &tree_tar,
        tree_bytes: tree.len() as u64,
    };
    let ops = mounts::operations(&paths);
    let (tools, mut skipped) = mounts::tools(&store, &top, &ops);
    let (results, failed) = runner::run_all(&tools, c.runs, &work.0.join("scratch"), c.drop_caches, &|m| c.say(m))?;
    skipped.extend(failed);
    let description = json!({"generated": {"size_mb": c.size, "seed": c.seed}, "layers": tars.len(),
        "fuse_over_io_uring": strata_fuse::uring_enabled(), "large_file_bytes": paths.large_bytes, "untar_files": files, "untar_bytes": tree.len(), "runs": c.runs,
        "dir": work.0.display().to_string()});
    c.emit(&results, &skipped, "strata bench mount: MB/s through the mount", description)
}

/// The bench's files: one OCI layout per codec, and the layers as separate files.
struct Workload {
    layouts: Vec<(&'static str, PathBuf)>,
    /// The gzip layout as an OCI archive (for `ctr images import`).
    gzip_archive: PathBuf,
    /// The same with a busybox layer on top, so `ctr run` has `/bin/true` to run
    /// (`None` without busybox-static).
    runnable_archive: Option<PathBuf>,
    gz: Vec<PathBuf>,
    zst: Vec<PathBuf>,
    tar: Vec<PathBuf>,
    bytes: u64,
    description: serde_json::Value,
}

fn unpack(args: UnpackBench) -> anyhow::Result<()> {
    let c = &args.common;
    let work = c.start()?;
    c.say("preparing the workload");
    let workload = prepare(&args, &work.0)?;
    let (tools, mut skipped) = tools(&args, &workload)?;
    let (results, failed) = runner::run_all(&tools, c.runs, &work.0.join("scratch"), c.drop_caches, &|m| c.say(m))?;
    skipped.extend(failed);
    let title = format!("strata bench unpack: MB/s of uncompressed layers ({} MB)", workload.bytes / 1_000_000);
    c.emit(&results, &skipped, &title, workload.description)
}

/// A temporary dir removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir(base: &Path) -> anyhow::Result<TempDir> {
    let dir = base.join(format!("strata-bench-{}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(TempDir(dir))
}

fn prepare(args: &UnpackBench, work: &Path) -> anyhow::Result<Workload> {
    let (tars, source) = match &args.image {
        None => (
            workload::image(args.common.size * 1_000_000, args.common.seed),
            json!({"generated": {"size_mb": args.common.size, "seed": args.common.seed}}),
        ),
        Some(path) => {
            let image = Image::open(path, &Selector::default())?;
            let mut tars = Vec::new();
            for layer in &image.layers {
                let mut blob = Vec::new();
                image.open_layer(layer)?.read_to_end(&mut blob)?;
                tars.push(decompress(&blob)?);
            }
            (tars, json!({"image": path.display().to_string(), "name": image.name}))
        }
    };
    let dir = work.join("layers");
    std::fs::create_dir_all(&dir)?;
    let (mut gz, mut zst, mut tar) = (Vec::new(), Vec::new(), Vec::new());
    for (i, t) in tars.iter().enumerate() {
        let write = |ext: &str, bytes: &[u8]| -> anyhow::Result<PathBuf> {
            let p = dir.join(format!("{i}.{ext}"));
            std::fs::write(&p, bytes)?;
            Ok(p)
        };
        tar.push(write("tar", t)?);
        gz.push(write("tar.gz", &workload::gzip(t))?);
        zst.push(write("tar.zst", &workload::zstd(t))?);
    }
    let layouts = vec![
        ("gzip", write_layout(&work.join("image-gzip"), &tars, &gz, "application/vnd.oci.image.layer.v1.tar+gzip")?),
        ("zstd", write_layout(&work.join("image-zstd"), &tars, &zst, "application/vnd.oci.image.layer.v1.tar+zstd")?),
    ];
    let gzip_archive = work.join("image-gzip.tar");
    let status = Command::new("tar").arg("-C").arg(&layouts[0].1).arg("-cf").arg(&gzip_archive).arg(".").status();
    if !status.is_ok_and(|s| s.success()) {
        bail!("tar could not archive the gzip image layout");
    }
    let runnable_archive = runnable_archive(work, &tars, &gz)?;
    let bytes: u64 = tars.iter().map(|t| t.len() as u64).sum();
    let entries = tars.iter().map(|t| count_entries(t)).sum::<usize>();
    let description = json!({"source": source, "layers": tars.len(), "uncompressed_bytes": bytes, "entries": entries,
        "dir": work.display().to_string(), "runs": args.common.runs, "drop_caches": args.common.drop_caches});
    Ok(Workload { layouts, gzip_archive, runnable_archive, gz, zst, tar, bytes, description })
}

fn decompress(blob: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    match Compression::sniff(blob) {
        Compression::Gzip => flate2::read::MultiGzDecoder::new(blob).read_to_end(&mut out)?,
        Compression::Zstd => zstd::stream::read::Decoder::new(blob)?.read_to_end(&mut out)?,
        _ => return Ok(blob.to_vec()),
    };
    Ok(out)
}

fn count_entries(tar: &[u8]) -> usize {
    let mut reader = strata_core::tar::Reader::new(tar, "plain");
    let mut n = 0;
    while let Ok(Some(_)) = reader.next_entry() {
        n += 1;
    }
    n
}

/// The gzip image plus a top layer with `/bin/busybox` and `/bin/true`, archived for
/// `ctr images import`; `None` when this host has no static busybox.
fn runnable_archive(work: &Path, tars: &[Vec<u8>], gz: &[PathBuf]) -> anyhow::Result<Option<PathBuf>> {
    if !Path::new("/bin/busybox").is_file() {
        return Ok(None);
    }
    let root = work.join("busybox-layer");
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))?;
    let _ = std::fs::remove_file(root.join("bin/true"));
    std::os::unix::fs::symlink("busybox", root.join("bin/true"))?;
    let tar = work.join("busybox-layer.tar");
    let status = Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg("bin").status();
    if !status.is_ok_and(|s| s.success()) {
        bail!("tar could not archive the busybox layer");
    }
    let tar_bytes = std::fs::read(&tar)?;
    let gz_path = work.join("busybox-layer.tar.gz");
    std::fs::write(&gz_path, workload::gzip(&tar_bytes))?;
    let mut tars = tars.to_vec();
    tars.push(tar_bytes);
    let mut gz = gz.to_vec();
    gz.push(gz_path);
    let layout = write_layout(&work.join("image-gzip-run"), &tars, &gz, "application/vnd.oci.image.layer.v1.tar+gzip")?;
    let archive = work.join("image-gzip-run.tar");
    let status = Command::new("tar").arg("-C").arg(&layout).arg("-cf").arg(&archive).arg(".").status();
    if !status.is_ok_and(|s| s.success()) {
        bail!("tar could not archive the runnable image layout");
    }
    Ok(Some(archive))
}

/// The generated image of `--size` and `--seed` as gzip layers in an OCI layout under
/// `work` (blobs in `work/layers`); returns the tars and the layout.
fn generated_layout(c: &Common, work: &Path) -> anyhow::Result<(Vec<Vec<u8>>, PathBuf)> {
    let tars = workload::image(c.size * 1_000_000, c.seed);
    let dir = work.join("layers");
    std::fs::create_dir_all(&dir)?;
    let mut blobs = Vec::new();
    for (i, t) in tars.iter().enumerate() {
        let p = dir.join(format!("{i}.tar.gz"));
        std::fs::write(&p, workload::gzip(t))?;
        blobs.push(p);
    }
    let layout = write_layout(&work.join("image"), &tars, &blobs, "application/vnd.oci.image.layer.v1.tar+gzip")?;
    Ok((tars, layout))
}

/// An OCI layout over already-written layer blobs, tagged `bench` (umoci's
/// `--image dir:bench`) and named for containerd's import.
fn write_layout(dir: &Path, tars: &[Vec<u8>], blobs: &[PathBuf], media_type: &str) -> anyhow::Result<PathBuf> {
    let mut layout = LayoutWriter::create(dir)?;
    let diff_ids: Vec<Digest> = tars.iter().map(|t| Digest::of(t)).collect();
    let bytes = blobs.iter().map(std::fs::read).collect::<std::io::Result<Vec<_>>>()?;
    let layers: Vec<LayerBlob<'_>> =
        bytes.iter().zip(&diff_ids).map(|(blob, diff_id)| LayerBlob { blob, diff_id, media_type }).collect();
    let platform = strata_image::Platform { os: "linux".into(), ..strata_image::Platform::host() };
    let manifest = layout.image(&layers, &platform, json!({}))?;
    layout.add(manifest, &[(REF_NAME, "bench"), ("io.containerd.image.name", containerd::IMAGE)]);
    Ok(layout.finish()?)
}

pub(crate) fn installed(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
}

/// `sh -c 'for f; do ...; done'` over layer files, extracting into `<scratch>/rootfs`.
fn per_layer(script: &'static str, files: &[PathBuf]) -> Box<dyn Fn(&Path) -> Command> {
    let files = files.to_vec();
    Box::new(move |scratch: &Path| {
        let rootfs = scratch.join("rootfs");
        let _ = std::fs::create_dir_all(&rootfs);
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!("set -e; d=\"$0\"; for f in \"$@\"; do {script}; done")).arg(rootfs).args(&files);
        c
    })
}

fn tools(args: &UnpackBench, w: &Workload) -> anyhow::Result<(Vec<Tool>, Vec<Skipped>)> {
    let exe = std::env::current_exe().context("locating the strata binary")?;
    let jobs = args.jobs.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), usize::from);
    let mut tools = Vec::new();
    let mut skipped = Vec::new();
    for (codec, layout) in &w.layouts {
        let to = format!("strata unpack --to ({codec})");
        let (exe2, layout2) = (exe.clone(), layout.clone());
        tools.push(Tool {
            name: format!("strata unpack --jobs {jobs} ({codec})"),
            pair: format!("strata unpack --jobs {jobs} ({codec})"),
            bytes: w.bytes,
            hooks: None,
            command: Box::new(move |scratch: &Path| {
                let mut c = Command::new(&exe2);
                c.args(["unpack", "--jobs", &jobs.to_string(), "--root"]).arg(scratch.join("root")).arg(&layout2);
                c
            }),
        });
        let (exe3, layout3) = (exe.clone(), layout.clone());
        tools.push(Tool {
            name: to.clone(),
            pair: to.clone(),
            bytes: w.bytes,
            hooks: None,
            command: Box::new(move |scratch: &Path| {
                let mut c = Command::new(&exe3);
                c.arg("unpack").arg(&layout3).arg("--to").arg(scratch.join("rootfs"));
                c
            }),
        });
        let mut peer =
            |name: String, programs: &[&str], package: &str, command: Box<dyn Fn(&Path) -> Command>| match programs
                .iter()
                .find(|p| !installed(p))
            {
                Some(missing) => skipped.push((name, format!("{missing} not installed (apt install {package})"))),
                None => tools.push(Tool { name, pair: to.clone(), bytes: w.bytes, command, hooks: None }),
            };
        if *codec == "gzip" {
            peer(
                "tar -xzf, per layer (gzip)".into(),
                &["tar", "gzip"],
                "tar gzip",
                per_layer("tar -xzf \"$f\" -C \"$d\"", &w.gz),
            );
            peer(
                "tar -I pigz -xf, per layer (gzip)".into(),
                &["tar", "pigz"],
                "pigz",
                per_layer("tar -I pigz -xf \"$f\" -C \"$d\"", &w.gz),
            );
            let layout4 = layout.clone();
            peer(
                "umoci unpack (gzip)".into(),
                &["umoci"],
                "umoci",
                Box::new(move |scratch: &Path| {
                    let mut c = Command::new("umoci");
                    c.arg("unpack")
                        .arg("--image")
                        .arg(format!("{}:bench", layout4.display()))
                        .arg(scratch.join("bundle"));
                    c
                }),
            );
            peer(
                "limit: gzip -dc > /dev/null".into(),
                &["gzip"],
                "gzip",
                per_layer("gzip -dc \"$f\" > /dev/null", &w.gz),
            );
        } else {
            peer(
                "tar --zstd -xf, per layer (zstd)".into(),
                &["tar", "zstd"],
                "tar zstd",
                per_layer("tar --zstd -xf \"$f\" -C \"$d\"", &w.zst),
            );
            peer(
                "limit: zstd -dc > /dev/null".into(),
                &["zstd"],
                "zstd",
                per_layer("zstd -qdc \"$f\" > /dev/null", &w.zst),
            );
        }
    }
    let first = format!("strata unpack --to ({})", w.layouts[0].0);
    tools.push(Tool {
        name: "limit: tar -xf of decompressed tars".into(),
        pair: first,
        bytes: w.bytes,
        command: per_layer("tar -xf \"$f\" -C \"$d\"", &w.tar),
        hooks: None,
    });
    let store_gzip = format!("strata unpack --jobs {jobs} (gzip)");
    let ctd = "containerd: ctr images mount, overlayfs snapshotter (gzip)".to_owned();
    match (["containerd", "ctr"].iter().find(|p| !installed(p)), rustix::process::geteuid().is_root()) {
        (Some(missing), _) => skipped.push((ctd, format!("{missing} not installed (apt install containerd)"))),
        (None, false) => skipped.push((ctd, "a private containerd needs root".into())),
        (None, true) => tools.push(Tool {
            name: ctd,
            pair: store_gzip,
            bytes: w.bytes,
            command: Box::new(|scratch: &Path| {
                let mut c = containerd::ctr(scratch);
                c.args(["images", "mount", "--snapshotter", "overlayfs", containerd::IMAGE]).arg(scratch.join("mnt"));
                c
            }),
            hooks: Some(Box::new(containerd::Daemon {
                archive: Some(w.gzip_archive.clone()),
                ..containerd::Daemon::default()
            })),
        }),
    }
    let strata_run = "strata snapshotter: ctr images import + first ctr run (gzip)".to_owned();
    let ctd_run = "containerd: ctr images import + first ctr run, overlayfs snapshotter (gzip)".to_owned();
    let missing = ["containerd", "ctr", "runc"].iter().find(|p| !installed(p));
    match (missing, rustix::process::geteuid().is_root(), &w.runnable_archive) {
        (Some(missing), _, _) => {
            for row in [strata_run, ctd_run] {
                skipped.push((row, format!("{missing} not installed (apt install containerd runc)")));
            }
        }
        (None, false, _) => {
            for row in [strata_run, ctd_run] {
                skipped.push((row, "a private containerd needs root".into()));
            }
        }
        (None, true, None) => {
            for row in [strata_run, ctd_run] {
                skipped.push((row, "no /bin/busybox to run in the image (apt install busybox-static)".into()));
            }
        }
        (None, true, Some(archive)) => {
            tools.push(Tool {
                name: strata_run.clone(),
                pair: strata_run.clone(),
                bytes: w.bytes,
                command: containerd::import_and_run(containerd::STRATA, archive.clone()),
                hooks: Some(Box::new(containerd::Daemon {
                    strata: Some(exe.clone()),
                    ..containerd::Daemon::default()
                })),
            });
            tools.push(Tool {
                name: ctd_run,
                pair: strata_run,
                bytes: w.bytes,
                command: containerd::import_and_run("overlayfs", archive.clone()),
                hooks: Some(Box::new(containerd::Daemon::default())),
            });
        }
    }
    Ok((tools, skipped))
}
