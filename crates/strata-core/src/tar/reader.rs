//! A strict, streaming tar reader.
//!
//! Why our own reader rather than the `tar` crate: a layer applier must refuse the inputs
//! on which tar implementations disagree (parser differentials), and must see every
//! header to do so. The `tar` crate folds PAX and GNU long-name headers into the entry for
//! us and, by design, is lenient about conflicts between them, sizes, and trailing data;
//! wrapping it would mean re-parsing its raw headers anyway. This reader is ~400 lines,
//! fails closed on anything ambiguous, and hands file data out in place ([`Reader::data`])
//! so bytes go from the decoder's buffer straight to the file.
//!
//! Refused: a PAX `path` and a GNU long name that disagree (same for `linkpath` and the
//! GNU long link), a PAX `size` that disagrees with the header, PAX or long-name headers
//! over 1 MiB, two metadata headers of one kind for one entry, data on header-only
//! types, PAX sparse files, unknown types, bad checksums, sizes past `i64::MAX` and
//! mtimes that do not fit `i64` (GNU tar and Go's archive/tar refuse them too).
//!
//! Accepted as real writers emit them, and as GNU tar, Go's archive/tar (Docker,
//! containerd) and umoci read them:
//! - a link name on a non-link entry is ignored: Docker's and containers/storage's tar
//!   writers leave the link name of overlayfs's shared whiteout inode on the 2nd and later
//!   `.wh.` entries of a layer (a type `0` entry with a link name);
//! - global PAX headers (`g`) are parsed and bounded, never applied to entries;
//! - bytes after the end-of-archive marker are read (so the diff_id covers them) and
//!   ignored, as Go's archive/tar stops at the marker.

use std::io::{self, BufRead};

use super::entry::{Entry, EntryKind, SparseMap, Timestamp};
use super::header::{BLOCK, Dialect, Field, RawHeader, cstr};
use super::pax;
use crate::error::Error;

/// Largest PAX extended header or GNU long name/link accepted.
pub const MAX_META_HEADER: u64 = 1024 * 1024;

/// Largest value an ustar octal size field can hold (11 octal digits).
const MAX_OCTAL_SIZE: u64 = 0o777_7777_7777;

/// Largest entry size accepted: tar sizes are signed 64-bit in GNU tar and Go, and
/// staying below it keeps every offset sum (data + padding + position) from wrapping.
const MAX_ENTRY_SIZE: u64 = i64::MAX as u64;

/// Streams entries out of a tar, failing closed on anything ambiguous.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    compression: &'static str,
    /// Offset in the uncompressed stream.
    offset: u64,
    /// Data bytes of the current entry not yet handed out.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    entries: u64,
    done: bool,
}

/// PAX / GNU metadata gathered for the next real entry.
#[derive(Default)]
struct Pending {
    pax: Option<Vec<pax::Record>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl<R: BufRead> Reader<R> {
    /// Reads from `inner`; `compression` names the stream in I/O errors.
    pub fn new(inner: R, compression: &'static str) -> Self {
        Reader { inner, compression, offset: 0, remaining: 0, padding: 0, entries: 0, done: false }
    }

    /// The underlying stream.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Bytes of uncompressed stream consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn stream_err(compression: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Stream { compression, source }
    }

    fn tar_err(&self, offset: u64, reason: impl Into<String>) -> Error {
        Error::Tar { offset, reason: reason.into() }
    }

    /// Fills `buf` completely; `Ok(false)` on a clean EOF before the first byte.
    fn read_exact_or_eof(&mut self, buf: &mut [u8]) -> Result<bool, Error> {
        let mut filled = 0;
        while filled < buf.len() {
            let chunk = self.inner.fill_buf().map_err(Self::stream_err(self.compression))?;
            if chunk.is_empty() {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(self.tar_err(self.offset, "unexpected end of stream inside a header or its data"));
            }
            let n = chunk.len().min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&chunk[..n]);
            self.inner.consume(n);
            filled += n;
            self.offset += n as u64;
        }
        Ok(true)
    }

    fn skip(&mut self, mut n: u64) -> Result<(), Error> {
        while n > 0 {
            let chunk = self.inner.fill_buf().map_err(Self::stream_err(self.compression))?;
            if chunk.is_empty() {
                return Err(self.tar_err(self.offset, "unexpected end of stream inside entry data"));
            }
            let take = chunk.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            self.inner.consume(take);
            self.offset += take as u64;
            n -= take as u64;
        }
        Ok(())
    }

    /// The next chunk of the current entry's data (empty when it is all read).
    pub fn data(&mut self) -> Result<&[u8], Error> {
        if self.remaining == 0 {
            return Ok(&[]);
        }
        let offset = self.offset;
        let remaining = self.remaining;
        let chunk = self.inner.fill_buf().map_err(Self::stream_err(self.compression))?;
        if chunk.is_empty() {
            return Err(Error::Tar { offset, reason: "unexpected end of stream inside entry data".into() });
        }
        let n = chunk.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
        Ok(&chunk[..n])
    }

    /// Marks `n` bytes of [`Reader::data`] as used.
    pub fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.offset += n as u64;
        self.remaining -= n as u64;
    }

    /// Data bytes of the current entry not yet consumed.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    fn read_block(&mut self) -> Result<Option<RawHeader>, Error> {
        let mut block = [0u8; BLOCK];
        Ok(self.read_exact_or_eof(&mut block)?.then_some(RawHeader(block)))
    }

    /// Reads a metadata header's data (PAX or long name), capped.
    fn read_meta(&mut self, at: u64, what: &str, size: u64) -> Result<Vec<u8>, Error> {
        if size > MAX_META_HEADER {
            return Err(
                self.tar_err(at, format!("{what} header of {size} bytes exceeds the {MAX_META_HEADER}-byte limit"))
            );
        }
        let mut data = vec![0u8; size as usize];
        if !self.read_exact_or_eof(&mut data)? && size > 0 {
            return Err(self.tar_err(at, format!("unexpected end of stream inside a {what} header")));
        }
        self.skip(pad(size))?;
        Ok(data)
    }

    /// The next entry, or `None` after the end-of-archive marker (or a clean EOF on a
    /// header boundary, as Go's archive/tar also accepts).
    pub fn next_entry(&mut self) -> Result<Option<Entry>, Error> {
        if self.done {
            return Ok(None);
        }
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        let mut pending = Pending::default();
        let mut first_offset = None;
        loop {
            let at = self.offset;
            let Some(header) = self.read_block()? else {
                if first_offset.is_some() {
                    return Err(self.tar_err(at, "stream ends after a metadata header, before its entry"));
                }
                self.done = true;
                return Ok(None);
            };
            if header.is_zero() {
                if first_offset.is_some() {
                    return Err(self.tar_err(at, "end-of-archive marker right after a metadata header"));
                }
                self.finish_after_end()?;
                return Ok(None);
            }
            first_offset.get_or_insert(at);
            header.checksum_ok().map_err(|r| self.tar_err(at, r))?;
            let dialect = header.dialect().map_err(|r| self.tar_err(at, r))?;
            let size = header.number(Field::Size).map_err(|r| self.tar_err(at, r))?;
            match header.typeflag() {
                b'x' => {
                    if pending.pax.is_some() {
                        return Err(self.tar_err(at, "two PAX headers for one entry"));
                    }
                    let data = self.read_meta(at, "PAX", size)?;
                    pending.pax = Some(pax::parse_records(&data).map_err(|r| self.tar_err(at, r))?);
                }
                b'g' => {
                    // Checked for well-formedness, then ignored: Go's archive/tar (Docker,
                    // containerd) returns global headers as entries that extraction skips,
                    // so applying their fields would make strata see a different tree.
                    let data = self.read_meta(at, "global PAX", size)?;
                    pax::parse_records(&data).map_err(|r| self.tar_err(at, r))?;
                }
                b'L' | b'K' => {
                    let (slot, what) = if header.typeflag() == b'L' {
                        (&mut pending.long_name, "GNU long name")
                    } else {
                        (&mut pending.long_link, "GNU long link")
                    };
                    if slot.is_some() {
                        return Err(Error::Tar { offset: at, reason: format!("two {what} headers for one entry") });
                    }
                    let data = self.read_meta(at, what, size)?;
                    let value = cstr(&data).to_vec();
                    if data[value.len()..].iter().any(|&b| b != 0) {
                        return Err(self.tar_err(at, format!("{what} contains a NUL byte")));
                    }
                    if header.typeflag() == b'L' {
                        pending.long_name = Some(value);
                    } else {
                        pending.long_link = Some(value);
                    }
                }
                _ => {
                    let start = first_offset.unwrap_or(at);
                    let entry = self.build_entry(start, at, &header, dialect, size, pending)?;
                    self.entries += 1;
                    return Ok(Some(entry));
                }
            }
        }
    }

    fn build_entry(
        &mut self,
        start: u64,
        at: u64,
        header: &RawHeader,
        dialect: Dialect,
        header_size: u64,
        pending: Pending,
    ) -> Result<Entry, Error> {
        let err = |reason: String| Error::Tar { offset: at, reason };
        let num = |field| header.number(field).map_err(err);
        let mut path = header.name(dialect);
        let mut link = header.linkname();
        let mut uid = num(Field::Uid)?;
        let mut gid = num(Field::Gid)?;
        let header_mtime = i64::try_from(num(Field::Mtime)?).map_err(|_| err("mtime field overflows i64".into()))?;
        let mut mtime = Timestamp { secs: header_mtime, nanos: 0 };
        let mut atime = None;
        let mut size = header_size;
        let mut xattrs = Vec::new();

        if let Some(name) = &pending.long_name {
            path.clone_from(name);
        }
        if let Some(name) = &pending.long_link {
            link.clone_from(name);
        }
        for record in pending.pax.iter().flatten() {
            let value = &record.value;
            // An empty value means "use the header's field" (POSIX pax, "keyword=").
            if value.is_empty() && !record.key.starts_with("SCHILY.xattr.") {
                continue;
            }
            match record.key.as_str() {
                "path" => {
                    if pending.long_name.as_ref().is_some_and(|n| n != value) {
                        return Err(err("PAX path and GNU long name disagree".into()));
                    }
                    path.clone_from(value);
                }
                "linkpath" => {
                    if pending.long_link.as_ref().is_some_and(|n| n != value) {
                        return Err(err("PAX linkpath and GNU long link disagree".into()));
                    }
                    link.clone_from(value);
                }
                "size" => {
                    let pax_size = pax::parse_decimal("size", value).map_err(err)?;
                    // The header may carry 0 when the size does not fit its octal field.
                    let header_could_not_hold = pax_size > MAX_OCTAL_SIZE && header_size == 0;
                    if pax_size != header_size && !header_could_not_hold {
                        return Err(err(format!("PAX size {pax_size} disagrees with header size {header_size}")));
                    }
                    size = pax_size;
                }
                "uid" => uid = pax::parse_decimal("uid", value).map_err(err)?,
                "gid" => gid = pax::parse_decimal("gid", value).map_err(err)?,
                "mtime" => {
                    let (secs, nanos) = pax::parse_time(value).map_err(err)?;
                    mtime = Timestamp { secs, nanos };
                }
                "atime" => {
                    let (secs, nanos) = pax::parse_time(value).map_err(err)?;
                    atime = Some(Timestamp { secs, nanos });
                }
                key if key.starts_with("GNU.sparse.") => {
                    return Err(err(format!(
                        "PAX sparse files ({key}) are not supported; store the file without --sparse"
                    )));
                }
                key => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        if name.is_empty() {
                            return Err(err("SCHILY.xattr record with an empty attribute name".into()));
                        }
                        xattrs.push((name.to_owned(), value.clone()));
                    }
                    // Other keys (ctime, uname, gname, comment, SCHILY.dev/ino/nlink, and
                    // LIBARCHIVE.xattr.*, which bsdtar always writes next to SCHILY.xattr.*)
                    // carry nothing a layer needs.
                }
            }
        }
        if path.contains(&0) || link.contains(&0) {
            return Err(err("path or link name contains a NUL byte".into()));
        }

        let typeflag = header.typeflag();
        let kind = match typeflag {
            b'0' | b'7' | b'S' => EntryKind::File,
            // Pre-POSIX tars mark directories as regular files with a trailing slash.
            0 if path.ends_with(b"/") => EntryKind::Dir,
            0 => EntryKind::File,
            b'1' => EntryKind::Hardlink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Dir,
            b'6' => EntryKind::Fifo,
            other => {
                return Err(err(format!("unsupported entry type {:?}", char::from(other))));
            }
        };
        if size > MAX_ENTRY_SIZE {
            return Err(err(format!("entry size {size} exceeds the largest tar size ({MAX_ENTRY_SIZE})")));
        }
        if !matches!(kind, EntryKind::File) && size != 0 {
            return Err(err(format!("{kind:?} entry carries {size} bytes of data; only regular files may")));
        }
        let is_link = matches!(kind, EntryKind::Symlink | EntryKind::Hardlink);
        if is_link && link.is_empty() {
            return Err(err("link entry with an empty target".into()));
        }
        if !is_link {
            // See the module docs: real writers leave stale link names on whiteouts.
            link.clear();
        }
        let device = if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
            (num(Field::DevMajor)?, num(Field::DevMinor)?)
        } else {
            (0, 0)
        };
        let sparse = if typeflag == b'S' {
            if dialect != Dialect::Gnu {
                return Err(err("GNU sparse entry without GNU magic".into()));
            }
            Some(self.read_gnu_sparse(at, header, size)?)
        } else {
            None
        };
        let mode = (num(Field::Mode)? & 0o7777) as u32;
        self.remaining = size;
        self.padding = pad(size);
        Ok(Entry {
            index: self.entries,
            offset: start,
            path,
            kind,
            link: (!link.is_empty()).then_some(link),
            mode,
            uid,
            gid,
            mtime,
            atime,
            size,
            device,
            xattrs,
            sparse,
        })
    }

    /// Reads the old-GNU sparse map: four slots in the header, then extension blocks.
    fn read_gnu_sparse(&mut self, at: u64, header: &RawHeader, stored: u64) -> Result<SparseMap, Error> {
        let err = |reason: String| Error::Tar { offset: at, reason };
        let real_size = header.number(Field::GnuRealSize).map_err(err)?;
        let mut regions = Vec::new();
        let mut collect = |slots: &[u8], count: usize| -> Result<(), Error> {
            for i in 0..count {
                let slot = &slots[i * 24..i * 24 + 24];
                if slot.iter().all(|&b| b == 0) {
                    break;
                }
                let offset = super::header::parse_numeric(&slot[..12]).map_err(err)?;
                let len = super::header::parse_numeric(&slot[12..]).map_err(err)?;
                regions.push((offset, len));
            }
            Ok(())
        };
        collect(&header.0[386..482], 4)?;
        let mut extended = header.0[482] != 0;
        let mut blocks = 0;
        while extended {
            blocks += 1;
            if blocks > 2048 {
                return Err(err("GNU sparse map has more than 2048 extension blocks".into()));
            }
            let ext = self.read_block()?.ok_or_else(|| err("stream ends inside a GNU sparse map".into()))?;
            collect(&ext.0[..504], 21)?;
            extended = ext.0[504] != 0;
        }
        // Regions must be in order, inside the real size, and add up to the stored data.
        let mut end = 0u64;
        let mut total = 0u64;
        for &(offset, len) in &regions {
            let region_end = offset.checked_add(len).filter(|&e| offset >= end && e <= real_size);
            end = region_end
                .ok_or_else(|| err("GNU sparse regions overlap, are unordered, or pass the file size".into()))?;
            total = total.checked_add(len).ok_or_else(|| err("GNU sparse regions overflow 64 bits".into()))?;
        }
        if total != stored {
            return Err(err(format!("GNU sparse regions hold {total} bytes but the entry stores {stored}")));
        }
        Ok(SparseMap { real_size, regions })
    }

    /// After the first zero block: reads to EOF so the diff_id covers every byte, and
    /// ignores what it reads (the second marker block, record padding, or anything a
    /// writer appended: Go's archive/tar, which Docker and containerd use, stops at the
    /// marker too, so no reader we must agree with extracts it).
    fn finish_after_end(&mut self) -> Result<(), Error> {
        self.done = true;
        loop {
            let chunk = self.inner.fill_buf().map_err(Self::stream_err(self.compression))?;
            if chunk.is_empty() {
                return Ok(());
            }
            let n = chunk.len();
            self.inner.consume(n);
            self.offset += n as u64;
        }
    }
}

/// Bytes of padding after `size` bytes of data.
fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}
