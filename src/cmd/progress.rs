//! Progress on a terminal: a bar over the input bytes of a long job, drawn on stderr only
//! when stderr is a terminal (never in pipes, logs or CI).

use std::io::{self, IsTerminal, Read};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};
use strata::rootfs::Progress;
use strata_image::Layer;
use strata_store::LayerEvent;

/// Wraps `inner` so reading it advances a bar of `total` bytes (a spinner when unknown).
pub fn reader<R: Read>(inner: R, total: Option<u64>, label: &str) -> ProgressReader<R> {
    if !io::stderr().is_terminal() {
        return ProgressReader { inner, bar: None };
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(label.to_owned());
    // Cleared when the reader is dropped, so results print on a clean line.
    ProgressReader { inner, bar: Some(bar.with_finish(ProgressFinish::AndClear)) }
}

/// A reader that reports how far it got.
#[derive(Debug)]
pub struct ProgressReader<R> {
    inner: R,
    bar: Option<ProgressBar>,
}

impl<R> ProgressReader<R> {
    /// A handle that can clear the bar after the reader has been moved away.
    pub fn handle(&self) -> Option<ProgressBar> {
        self.bar.clone()
    }
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
        }
        Ok(n)
    }
}

type WrapFn = dyn Fn(&Layer, Box<dyn Read + Send>) -> Box<dyn Read + Send> + Sync;
type EventFn = dyn Fn(LayerEvent<'_>) + Sync;

/// Reports an image unpack on stderr: a bar per layer being read, a line per layer
/// committed, one line for all the layers the store already held.
pub struct LayerReporter {
    total: usize,
    reused: Arc<AtomicUsize>,
    wrap: Box<WrapFn>,
    on_event: Box<EventFn>,
}

impl LayerReporter {
    /// A reporter for an image of `total` layers; `quiet` prints no lines (bars still
    /// show on a terminal).
    pub fn new(total: usize, quiet: bool) -> LayerReporter {
        let reused = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&reused);
        let wrap = Box::new(move |layer: &Layer, blob: Box<dyn Read + Send>| {
            let label = format!("layer {}/{total}", layer.index + 1);
            Box::new(reader(blob, Some(layer.size), &label)) as Box<dyn Read + Send>
        });
        let on_event = Box::new(move |event: LayerEvent<'_>| match event {
            _ if quiet => {}
            // One line for all of them at the end: a 200-layer image reused is not news.
            LayerEvent::Reused { .. } => {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            LayerEvent::Started { .. } => {}
            LayerEvent::Committed { index, chain, report } => eprintln!(
                "layer {}/{total} {chain} unpacked ({}) {:.1} MB, {} entries, {:.2} s ({:.0} MB/s)",
                index + 1,
                report.compression,
                report.uncompressed_bytes as f64 / 1e6,
                report.entries,
                report.elapsed.as_secs_f64(),
                report.megabytes_per_second()
            ),
        });
        LayerReporter { total, reused, wrap, on_event }
    }

    /// The hooks to hand to `strata::rootfs::unpack_image` or `mount_image`.
    pub fn progress(&self) -> Progress<'_> {
        Progress { wrap_blob: Some(&*self.wrap), on_event: &*self.on_event }
    }

    /// Prints the line for reused layers, if any.
    pub fn finish(&self) {
        let reused = self.reused.load(Ordering::Relaxed);
        if reused > 0 {
            eprintln!("{reused} of {} layers already in the store", self.total);
        }
    }
}
