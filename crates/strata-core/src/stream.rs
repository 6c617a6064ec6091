//! The layer byte stream: compression sniffing, decompression on its own thread, and
//! hashing of both the input bytes (the blob digest) and the uncompressed stream (the
//! diff_id) while the bytes go by.
//!
//! The decoder thread hands fixed-size chunks over a bounded channel, so peak memory is
//! about `CHUNK * 2 * (DEPTH + 2)` whatever the layer size, and the apply thread reads them
//! in place through [`BufRead`] (no second copy before the bytes reach a file). Spent
//! chunks travel back for reuse. The work is split to balance two cores: the decoder
//! thread decompresses and hashes the input; the apply thread hashes the uncompressed
//! stream (the diff_id) as chunks arrive, between its write syscalls.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::digest::{Digest, Hasher};

/// Size of one chunk handed from the decoder thread to the apply thread.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the threads.
const DEPTH: usize = 8;

/// How a layer blob is compressed, as told by its first bytes (never by a file name or a
/// media type: both lie in the wild).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (RFC 1952), one or several members.
    Gzip,
    /// zstd (RFC 8878), one or several frames.
    Zstd,
}

impl Compression {
    /// Recognises gzip (`1f 8b`) and zstd magic: a frame (`28 b5 2f fd`) or a skippable
    /// frame (`5? 2a 4d 18`, RFC 8878 §3.1.2, which the zstd decoder skips); anything
    /// else is plain.
    pub fn sniff(head: &[u8]) -> Compression {
        let skippable = head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18];
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || skippable {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// A short lower-case name: `plain`, `gzip`, `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "plain",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the decoder thread learned once the input ended.
#[derive(Debug, Clone)]
pub(crate) struct InputSummary {
    /// sha256 of the input bytes (the blob digest).
    pub digest: Digest,
    /// Input bytes read.
    pub compressed_bytes: u64,
}

/// What the apply side learned once the uncompressed stream ended.
#[derive(Debug, Clone)]
pub(crate) struct OutputSummary {
    /// sha256 of the uncompressed stream to EOF (the diff_id); `None` when the stream
    /// was not compressed, so the input digest is the diff_id.
    pub diff_id: Option<Digest>,
    /// Uncompressed bytes.
    pub uncompressed_bytes: u64,
}

/// Counts and hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Sniffs the compression of `input` and returns the pieces of a decoding pipeline:
/// a job to run on its own thread, and the reader the apply thread consumes.
pub(crate) fn pipeline<R: Read + Send>(input: R) -> io::Result<(DecodeJob<R>, ChunkReader)> {
    let mut raw = Hashing { inner: input, hasher: Hasher::new(), count: 0 };
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match raw.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let compression = Compression::sniff(&head[..got]);
    let (tx, rx) = sync_channel(DEPTH);
    let (spent_tx, spent_rx) = sync_channel(DEPTH + 2);
    let job = DecodeJob { raw, head, head_len: got, compression, tx, spent: spent_rx };
    let reader = ChunkReader {
        rx,
        spent: spent_tx,
        chunk: Vec::new(),
        pos: 0,
        error: None,
        compression,
        // A plain stream's diff_id is its digest: hash it once, on the decoder side.
        hasher: (compression != Compression::None).then(Hasher::new),
        count: 0,
    };
    Ok((job, reader))
}

/// The decoder side: runs on its own thread until the input ends or the reader hangs up.
pub(crate) struct DecodeJob<R> {
    raw: Hashing<R>,
    head: [u8; 4],
    head_len: usize,
    compression: Compression,
    tx: SyncSender<io::Result<Vec<u8>>>,
    spent: Receiver<Vec<u8>>,
}

impl<R: Read> DecodeJob<R> {
    /// Decodes to EOF, sending chunks; returns the digests. Errors are also sent to the
    /// reader so it fails at the right place.
    pub fn run(self) -> io::Result<InputSummary> {
        let DecodeJob { raw, head, head_len, compression, tx, spent } = self;
        let mut source = BufReader::with_capacity(CHUNK, io::Cursor::new(head).take(head_len as u64).chain(raw));
        let result = match compression {
            Compression::None => pump(&mut source, &tx, &spent).map(|()| source),
            Compression::Gzip => pump_gzip_members(&mut source, &tx, &spent).map(|()| source),
            Compression::Zstd => zstd::stream::read::Decoder::with_buffer(source)
                .and_then(|mut d| pump(&mut d, &tx, &spent).map(|()| d))
                .map(|d| d.finish()),
        };
        let summary = result.and_then(|source| {
            let raw = drain_trailing(source)?;
            Ok(InputSummary { digest: raw.hasher.finish(), compressed_bytes: raw.count })
        });
        if let Err(e) = &summary {
            // The reader may already be gone (it failed first); then nobody needs this.
            let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
        }
        summary
    }
}

/// Decodes gzip members one after another (RFC 1952 §2.2: a file is a series of
/// members) and stops at EOF or at zero padding, which GNU gzip also accepts ("trailing
/// zero bytes ignored"): tape-style writers pad a stream to a record size. Anything else
/// after a member is left for [`drain_trailing`] to refuse.
fn pump_gzip_members<B: BufRead>(
    source: &mut B,
    tx: &SyncSender<io::Result<Vec<u8>>>,
    spent: &Receiver<Vec<u8>>,
) -> io::Result<()> {
    loop {
        pump(&mut flate2::bufread::GzDecoder::new(&mut *source), tx, spent)?;
        let next = source.fill_buf()?;
        if !next.starts_with(&[0x1f, 0x8b]) {
            return Ok(());
        }
    }
}

/// Reads what a decoder left unread after its end, so the blob digest covers every
/// input byte. Zero padding is accepted (see [`pump_gzip_members`]); any other byte is
/// data some other reader might decode, so it is refused.
fn drain_trailing<R: Read>(source: Source<R>) -> io::Result<Hashing<R>> {
    let mut source = source;
    let mut extra = 0u64;
    loop {
        let chunk = source.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        if chunk.iter().any(|&b| b != 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("non-zero trailing data after the compressed stream (at {extra} bytes past its end)"),
            ));
        }
        let n = chunk.len();
        source.consume(n);
        extra += n as u64;
    }
    Ok(source.into_inner().into_inner().1)
}

/// The raw input: the sniffed head bytes, then the rest, all hashed.
type Source<R> = BufReader<io::Chain<io::Take<io::Cursor<[u8; 4]>>, Hashing<R>>>;

fn pump<D: Read>(decoder: &mut D, tx: &SyncSender<io::Result<Vec<u8>>>, spent: &Receiver<Vec<u8>>) -> io::Result<()> {
    loop {
        let mut chunk = spent.try_recv().unwrap_or_default();
        // A recycled chunk is zeroed only past its old length (usually nothing).
        chunk.resize(CHUNK, 0);
        let mut filled = 0;
        while filled < CHUNK {
            match decoder.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        chunk.truncate(filled);
        if tx.send(Ok(chunk)).is_err() {
            // The apply side stopped (it failed); stop decoding quietly.
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "layer reader stopped"));
        }
    }
}

/// The apply side of the pipeline: a [`BufRead`] over the decoder's chunks.
pub(crate) struct ChunkReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    spent: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
    error: Option<(io::ErrorKind, String)>,
    compression: Compression,
    hasher: Option<Hasher>,
    count: u64,
}

impl ChunkReader {
    /// The compression the stream was sniffed as.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The diff_id of every byte received (`None` for a plain stream, whose diff_id is
    /// the input digest); meaningful once the stream hit EOF.
    pub fn finish(self) -> OutputSummary {
        OutputSummary { diff_id: self.hasher.map(Hasher::finish), uncompressed_bytes: self.count }
    }
}

impl fmt::Debug for ChunkReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkReader").field("compression", &self.compression).finish_non_exhaustive()
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if let Some((kind, msg)) = &self.error {
            return Err(io::Error::new(*kind, msg.clone()));
        }
        if self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    if let Some(hasher) = &mut self.hasher {
                        hasher.update(&chunk);
                    }
                    self.count += chunk.len() as u64;
                    let spent = std::mem::replace(&mut self.chunk, chunk);
                    // Back to the decoder for reuse; if its queue is full, just free it.
                    let _ = self.spent.try_send(spent);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.error = Some((e.kind(), e.to_string()));
                    return Err(e);
                }
                // The decoder finished and hung up: EOF.
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.chunk[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.chunk.len());
    }
}
