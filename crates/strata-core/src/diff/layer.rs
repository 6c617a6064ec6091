//! A layer blob written while it is hashed and compressed: the walk produces the tar on
//! the calling thread; another thread hashes it (the diff_id), compresses it, hashes
//! the blob (the digest) and writes it out, as unpacking splits the work the other way.

use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::{DiffOptions, DiffReport, write_tar};
use crate::digest::{Digest, Hasher};
use crate::stream::Compression;
use crate::{Error, Result};

const CHUNK: usize = 256 * 1024;
const DEPTH: usize = 8;

/// What [`write_layer`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerOutput {
    /// The digest of the uncompressed tar (the config's `diff_id`).
    pub diff_id: Digest,
    /// The digest of the blob as written (the manifest's layer digest).
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// What the walk wrote.
    pub report: DiffReport,
}

/// Writes the layer of upper dir `upper` to `out`, compressed with `compression`
/// (gzip at level 6 as `docker push` and containerd use, in 1 MiB members compressed on
/// every core; zstd at level 3 as containerd does). gzip headers carry no time or
/// name, so the bytes depend only on the tree, not on the host or its core count.
///
/// # Errors
/// As [`write_tar`], or compressing or writing `out` fails.
pub fn write_layer<W: Write + Send>(
    upper: &Path,
    options: &DiffOptions,
    compression: Compression,
    out: W,
) -> Result<LayerOutput> {
    let (send, receive) = sync_channel::<Vec<u8>>(DEPTH);
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || compress(receive, compression, out));
        let walked = write_tar(upper, options, ChunkWriter { send, buf: Vec::with_capacity(CHUNK) });
        // The sender is gone once write_tar returns: the worker sees the end.
        let written = worker.join().map_err(|_| io::Error::other("the compression thread panicked"));
        // A failed blob write is the cause of the walk's broken pipe: report it first.
        let (diff_id, digest, size) = written.and_then(|r| r).map_err(|source| Error::Io {
            op: "write layer blob",
            path: upper.to_path_buf(),
            source,
        })?;
        Ok(LayerOutput { diff_id, digest, size, report: walked? })
    })
}

/// Hands the tar bytes to the worker in chunks.
struct ChunkWriter {
    send: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.send.send(chunk).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the layer writer stopped"))?;
        }
        Ok(())
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Counts and hashes what goes to the blob.
struct Hashing<W> {
    out: W,
    hasher: Hasher,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.out.write(data)?;
        self.hasher.update(&data[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Uncompressed bytes per gzip member: fixed, so the blob is the same bytes on any
/// number of cores.
const MEMBER: usize = 4 * CHUNK;

/// gzip as a series of members of [`MEMBER`] bytes each, compressed on every core and
/// written in order (RFC 1952 streams may hold several members; Go's, zlib's and GNU
/// gzip's readers read them all, as pigz's `-i` output). Level 6, no name, time 0.
fn gzip_members<W: Write>(chunks: Receiver<Vec<u8>>, diff_id: &mut Hasher, out: W) -> io::Result<W> {
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).clamp(1, 8);
    gzip_members_on(workers, chunks, diff_id, out)
}

/// [`gzip_members`] on `workers` threads (the bytes do not depend on it).
fn gzip_members_on<W: Write>(
    workers: usize,
    chunks: Receiver<Vec<u8>>,
    diff_id: &mut Hasher,
    mut out: W,
) -> io::Result<W> {
    let (to_workers, jobs) = sync_channel::<(u64, Vec<u8>)>(workers * 2);
    let jobs = std::sync::Mutex::new(jobs);
    let (to_writer, done) = sync_channel::<(u64, io::Result<Vec<u8>>)>(workers * 2);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (jobs, to_writer) = (&jobs, to_writer.clone());
            scope.spawn(move || {
                loop {
                    let job = jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                    let Ok((n, block)) = job else { break };
                    let mut gz = flate2::GzBuilder::new()
                        .write(Vec::with_capacity(block.len() / 2), flate2::Compression::new(6));
                    let member = gz.write_all(&block).and_then(|()| gz.finish());
                    if to_writer.send((n, member)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(to_writer);
        // The tar bytes are cut into blocks on a feeder thread (it also hashes them:
        // the diff_id); this thread writes the members back in order.
        let feeder = scope.spawn(move || {
            let mut hasher = Hasher::new();
            let mut block = Vec::with_capacity(MEMBER);
            let mut n = 0u64;
            let send = |block: Vec<u8>, n: &mut u64| {
                let sent = to_workers.send((*n, block));
                *n += 1;
                sent.is_ok()
            };
            'chunks: for chunk in chunks {
                hasher.update(&chunk);
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    let take = rest.len().min(MEMBER - block.len());
                    block.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if block.len() == MEMBER && !send(std::mem::replace(&mut block, Vec::with_capacity(MEMBER)), &mut n)
                    {
                        break 'chunks;
                    }
                }
            }
            // An empty layer is still one (empty) member: a valid gzip file.
            if !block.is_empty() || n == 0 {
                send(block, &mut n);
            }
            hasher
        });
        let mut pending = std::collections::BTreeMap::new();
        let mut next = 0u64;
        let mut failed = None;
        for (n, member) in done {
            match member {
                Ok(member) if failed.is_none() => {
                    pending.insert(n, member);
                    while let Some(member) = pending.remove(&next) {
                        if let Err(e) = out.write_all(&member) {
                            failed = Some(e);
                            break;
                        }
                        next += 1;
                    }
                }
                Ok(_) => {}
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        *diff_id = feeder.join().map_err(|_| io::Error::other("the gzip feeder thread panicked"))?;
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    })
}

fn compress<W: Write>(
    chunks: Receiver<Vec<u8>>,
    compression: Compression,
    out: W,
) -> io::Result<(Digest, Digest, u64)> {
    let mut diff_id = Hasher::new();
    let blob = Hashing { out, hasher: Hasher::new(), size: 0 };
    let blob = match compression {
        Compression::Gzip => gzip_members(chunks, &mut diff_id, blob)?,
        Compression::Zstd => {
            let mut zst = zstd::stream::write::Encoder::new(blob, 3)?;
            for chunk in chunks {
                diff_id.update(&chunk);
                zst.write_all(&chunk)?;
            }
            zst.finish()?
        }
        _ => {
            let mut plain = blob;
            for chunk in chunks {
                diff_id.update(&chunk);
                plain.write_all(&chunk)?;
            }
            plain
        }
    };
    let Hashing { mut out, hasher, size } = blob;
    out.flush()?;
    Ok((diff_id.finish(), hasher.finish(), size))
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn compress_on(workers: usize, data: &[u8]) -> (Vec<u8>, Digest) {
        let (send, receive) = sync_channel(DEPTH);
        let chunks: Vec<Vec<u8>> = data.chunks(CHUNK / 3).map(<[u8]>::to_vec).collect();
        let feeder = std::thread::spawn(move || {
            for chunk in chunks {
                send.send(chunk).expect("send");
            }
        });
        let mut diff_id = Hasher::new();
        let out = gzip_members_on(workers, receive, &mut diff_id, Vec::new()).expect("compress");
        feeder.join().expect("feeder");
        (out, diff_id.finish())
    }

    #[test]
    fn gzip_layers_are_the_same_bytes_on_any_number_of_cores() {
        let data: Vec<u8> =
            (0..(3 * MEMBER + 12_345) as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let (one, id_one) = compress_on(1, &data);
        for workers in [2, 3, 8] {
            let (many, id_many) = compress_on(workers, &data);
            assert!(one == many, "{workers} workers wrote other bytes");
            assert_eq!(id_one, id_many);
        }
        assert_eq!(id_one, Digest::of(&data));
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&one[..]).read_to_end(&mut back).expect("a valid multi-member gzip");
        assert!(back == data);
        let (empty, _) = compress_on(2, &[]);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&empty[..]).read_to_end(&mut back).expect("an empty layer is valid gzip");
        assert!(back.is_empty());
    }
}
