//! Progress on a terminal: a bar over the input bytes of a long job, drawn on stderr only
//! when stderr is a terminal (never in pipes, logs or CI).

use std::io::{self, IsTerminal, Read};

use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};

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
