//! Timing commands fairly: warm-up, alternating rounds, medians, peak RSS.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

/// One contender: a command run fresh each time in an empty scratch dir.
pub struct Tool {
    /// Row label.
    pub name: String,
    /// Which strata row it is compared with (its own name for strata rows).
    pub pair: String,
    /// Uncompressed bytes it processes (for MB/s).
    pub bytes: u64,
    /// Builds the command; given a fresh, empty scratch dir it may write under.
    pub command: Box<dyn Fn(&Path) -> Command>,
    /// Untimed work before and after each run (a peer's daemon, say).
    pub hooks: Option<Box<dyn RunHooks>>,
}

/// Untimed steps around a tool's timed command.
pub trait RunHooks {
    /// Before the timed command, in its scratch dir.
    fn before(&self, scratch: &Path) -> anyhow::Result<()>;
    /// After it (also after a failure).
    fn after(&self, scratch: &Path);
    /// Whether `sync` runs inside the timed span (the default). Off for rows that
    /// measure what a program waits for, before the data reaches the disk.
    fn sync_in_time(&self) -> bool {
        true
    }
}

/// A tool left out of the results, and why (not installed, or failed its warm-up).
pub type Skipped = (String, String);

/// Measurements of one tool.
#[derive(Debug, Clone)]
pub struct Measured {
    pub name: String,
    pub pair: String,
    pub bytes: u64,
    pub seconds: Vec<f64>,
    pub peak_rss_kb: Option<u64>,
}

impl Measured {
    pub fn median(&self) -> f64 {
        let mut s = self.seconds.clone();
        s.sort_by(f64::total_cmp);
        s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
    }
    pub fn min(&self) -> f64 {
        self.seconds.iter().copied().fold(f64::INFINITY, f64::min)
    }
    pub fn max(&self) -> f64 {
        self.seconds.iter().copied().fold(0.0, f64::max)
    }
}

/// Runs every tool once to warm caches, then `runs` rounds in alternating order
/// (A B C, then C B A, ...), each in a fresh scratch dir under `work`, `sync` included in
/// the time unless the tool's hooks say otherwise. With `drop_caches`, the page cache is dropped before every run.
pub fn run_all(
    tools: &[Tool],
    runs: usize,
    work: &Path,
    drop_caches: bool,
    progress: &dyn Fn(&str),
) -> anyhow::Result<(Vec<Measured>, Vec<Skipped>)> {
    let gnu_time = Path::new("/usr/bin/time").exists();
    // A peer that fails its warm-up is reported as failed, not fatal; strata must run.
    let mut live = Vec::new();
    let mut failed = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        progress(&format!("warm-up: {}", tool.name));
        match run_once(tool, &scratch(work, i)?, false, gnu_time) {
            Ok(_) => live.push(i),
            Err(e) if !tool.name.starts_with("strata") => failed.push((tool.name.clone(), format!("failed: {e:#}"))),
            Err(e) => return Err(e.context(format!("warm-up run of {}", tool.name))),
        }
    }
    let mut results: Vec<Measured> = live
        .iter()
        .map(|&i| Measured {
            name: tools[i].name.clone(),
            pair: tools[i].pair.clone(),
            bytes: tools[i].bytes,
            seconds: Vec::new(),
            peak_rss_kb: None,
        })
        .collect();
    for round in 0..runs {
        let order: Vec<usize> =
            if round % 2 == 0 { (0..live.len()).collect() } else { (0..live.len()).rev().collect() };
        for slot in order {
            let tool = &tools[live[slot]];
            progress(&format!("round {}/{runs}: {}", round + 1, tool.name));
            let (secs, rss) = run_once(tool, &scratch(work, live[slot])?, drop_caches, gnu_time)
                .with_context(|| format!("run {} of {}", round + 1, tool.name))?;
            results[slot].seconds.push(secs);
            results[slot].peak_rss_kb = results[slot].peak_rss_kb.max(rss);
        }
    }
    Ok((results, failed))
}

fn scratch(work: &Path, i: usize) -> anyhow::Result<PathBuf> {
    let dir = work.join(format!("run-{i}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn run_once(tool: &Tool, scratch: &Path, drop_caches: bool, gnu_time: bool) -> anyhow::Result<(f64, Option<u64>)> {
    if drop_caches {
        self::drop_caches()?;
    } else {
        sync();
    }
    if let Some(hooks) = &tool.hooks {
        hooks.before(scratch)?;
    }
    let result = timed(tool, scratch, gnu_time);
    if let Some(hooks) = &tool.hooks {
        hooks.after(scratch);
    }
    result
}

fn timed(tool: &Tool, scratch: &Path, gnu_time: bool) -> anyhow::Result<(f64, Option<u64>)> {
    let mut cmd = tool.command.as_ref()(scratch);
    let rss_file = scratch.with_extension("rss");
    if gnu_time {
        let mut wrapped = Command::new("/usr/bin/time");
        wrapped.args(["-f", "%M", "-o"]).arg(&rss_file).arg(cmd.get_program()).args(cmd.get_args());
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        cmd = wrapped;
    }
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("starting {}", tool.name))?;
    if tool.hooks.as_ref().is_none_or(|h| h.sync_in_time()) {
        sync();
    }
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{} failed: {}", tool.name, String::from_utf8_lossy(&out.stderr).trim());
    }
    let rss =
        std::fs::read_to_string(&rss_file).ok().and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()));
    Ok((secs, rss))
}

/// Writes back dirty data, then drops the page, dentry and inode caches (root only).
pub fn drop_caches() -> anyhow::Result<()> {
    sync();
    std::fs::write("/proc/sys/vm/drop_caches", b"3").context("dropping the page cache (needs root)")
}

fn sync() {
    rustix::fs::sync();
}
