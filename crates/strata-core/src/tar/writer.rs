//! A small tar writer: the layers that tests, benches and the demo build, and the
//! layers `diff` emits (file data streamed, [`Builder::append_reader`]).
//!
//! [`Builder`] writes ustar headers and adds a PAX header only when a field does not fit
//! (long paths, large ids, sub-second times, xattrs), as Go's archive/tar and containerd
//! do. Hostile archives are crafted elsewhere (strata-testkit), byte by byte.

use std::io::{self, Write};

use super::entry::{Entry, EntryKind, Timestamp};
use super::header::BLOCK;
use super::pax::format_record;

/// Writes a tar stream entry by entry.
#[derive(Debug)]
pub struct Builder<W: Write> {
    out: W,
}

impl<W: Write> Builder<W> {
    /// A builder writing to `out`.
    pub fn new(out: W) -> Self {
        Builder { out }
    }

    /// Appends `entry` with `data` (its length overrides `entry.size`).
    ///
    /// # Errors
    /// Fails when writing to the output fails.
    pub fn append(&mut self, entry: &Entry, data: &[u8]) -> io::Result<()> {
        self.header(entry, data.len() as u64)?;
        self.write_padded(data)
    }

    /// Appends `entry` with exactly `size` bytes streamed from `data`.
    ///
    /// # Errors
    /// Reading or writing fails, or `data` ends before `size` bytes (a file that shrank
    /// while it was read): the archive is then unusable.
    pub fn append_reader(&mut self, entry: &Entry, size: u64, data: &mut impl io::Read) -> io::Result<()> {
        self.header(entry, size)?;
        let copied = io::copy(&mut io::Read::take(&mut *data, size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} shrank while it was archived ({copied} of {size} bytes)",
                    String::from_utf8_lossy(&entry.path)
                ),
            ));
        }
        let pad = ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize;
        self.out.write_all(&[0u8; BLOCK][..pad])
    }

    /// Writes the (PAX and) ustar header(s) of `entry` for `size` data bytes.
    fn header(&mut self, entry: &Entry, size: u64) -> io::Result<()> {
        let mut records = Vec::new();
        let link = entry.link.as_deref().unwrap_or_default();
        let (name, prefix) = split_ustar_name(&entry.path).unwrap_or((&[][..], &[][..]));
        if name.is_empty() && !entry.path.is_empty() {
            records.push(format_record("path", &entry.path));
        }
        if link.len() > 100 {
            records.push(format_record("linkpath", link));
        }
        for (id, key) in [(entry.uid, "uid"), (entry.gid, "gid")] {
            if id > 0o7777777 {
                records.push(format_record(key, id.to_string().as_bytes()));
            }
        }
        if entry.mtime.nanos != 0 || entry.mtime.secs < 0 || entry.mtime.secs > 0o77777777777 {
            records.push(format_record("mtime", format_time(entry.mtime).as_bytes()));
        }
        for (key, value) in &entry.xattrs {
            records.push(format_record(&format!("SCHILY.xattr.{key}"), value));
        }
        if !records.is_empty() {
            let body = records.concat();
            self.out.write_all(&pax_header(&entry.path, &body))?;
        }
        let typeflag = match entry.kind {
            EntryKind::File => b'0',
            EntryKind::Hardlink => b'1',
            EntryKind::Symlink => b'2',
            EntryKind::CharDevice => b'3',
            EntryKind::BlockDevice => b'4',
            EntryKind::Dir => b'5',
            EntryKind::Fifo => b'6',
        };
        let mut block = HeaderFields {
            typeflag,
            name,
            prefix,
            link: if link.len() > 100 { &[] } else { link },
            size,
            mode: entry.mode,
            uid: entry.uid.min(0o7777777),
            gid: entry.gid.min(0o7777777),
            mtime: entry.mtime.secs.clamp(0, 0o77777777777) as u64,
            device: entry.device,
        }
        .block();
        set_checksum(&mut block);
        self.out.write_all(&block)
    }

    /// The output written so far (e.g. to add bytes between entries).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    fn write_padded(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)?;
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.out.write_all(&[0u8; BLOCK][..pad])
    }

    /// Writes the end-of-archive marker (two zero blocks) and returns the output.
    ///
    /// # Errors
    /// Fails when writing to the output fails.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Splits a path into ustar `name` (<= 100) and `prefix` (<= 155) at a slash.
fn split_ustar_name(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((path, &[]));
    }
    let earliest = path.len().saturating_sub(101);
    (earliest..path.len().min(156))
        .filter(|&i| path[i] == b'/')
        .map(|i| (&path[i + 1..], &path[..i]))
        .find(|(name, _)| !name.is_empty() && name.len() <= 100)
}

fn format_time(t: Timestamp) -> String {
    if t.secs >= 0 {
        format!("{}.{:09}", t.secs, t.nanos)
    } else if t.nanos == 0 {
        format!("{}", t.secs)
    } else {
        // secs -2, nanos 0.75e9 is -1.25.
        format!("-{}.{:09}", -(t.secs + 1), 1_000_000_000 - t.nanos)
    }
}

/// The fields of one ustar header.
#[derive(Debug, Clone, Default)]
struct HeaderFields<'a> {
    /// Type flag byte (`b'0'`, `b'x'`, ...).
    typeflag: u8,
    /// `name` field (<= 100 bytes).
    name: &'a [u8],
    /// `prefix` field (<= 155 bytes).
    prefix: &'a [u8],
    /// `linkname` field (<= 100 bytes).
    link: &'a [u8],
    /// Size field.
    size: u64,
    /// Mode field.
    mode: u32,
    /// Uid field.
    uid: u64,
    /// Gid field.
    gid: u64,
    /// Mtime field (seconds).
    mtime: u64,
    /// Device major/minor.
    device: (u64, u64),
}

impl HeaderFields<'_> {
    /// A POSIX ustar block with these fields; call [`set_checksum`] after any change.
    /// Fields too long for their slot are cut (hostile tests rely on exact bytes).
    fn block(&self) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        put(&mut b[0..100], self.name);
        octal(&mut b[100..108], u64::from(self.mode));
        octal(&mut b[108..116], self.uid);
        octal(&mut b[116..124], self.gid);
        octal(&mut b[124..136], self.size);
        octal(&mut b[136..148], self.mtime);
        b[156] = self.typeflag;
        put(&mut b[157..257], self.link);
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        put(&mut b[265..297], b"root");
        put(&mut b[297..329], b"root");
        octal(&mut b[329..337], self.device.0);
        octal(&mut b[337..345], self.device.1);
        put(&mut b[345..500], self.prefix);
        set_checksum(&mut b);
        b
    }
}

fn put(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Writes `value` as zero-padded octal ending in NUL; base-256 when it does not fit.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() <= digits {
        field[..digits].copy_from_slice(text.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let bytes = value.to_be_bytes();
        let n = bytes.len().min(field.len() - 1);
        let start = field.len() - n;
        field[start..].copy_from_slice(&bytes[bytes.len() - n..]);
    }
}

/// Recomputes the checksum field of a header block.
fn set_checksum(block: &mut [u8; BLOCK]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
}

/// A PAX extended header (`x`) block plus its padded data.
fn pax_header(path: &[u8], records: &[u8]) -> Vec<u8> {
    meta_header(b'x', &[b"PaxHeaders/", last_component(path)].concat(), records)
}

fn meta_header(typeflag: u8, name: &[u8], data: &[u8]) -> Vec<u8> {
    let block = HeaderFields { typeflag, name, size: data.len() as u64, mode: 0o644, ..Default::default() }.block();
    let mut out = block.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len() + (BLOCK - data.len() % BLOCK) % BLOCK, 0);
    out
}

fn last_component(path: &[u8]) -> &[u8] {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    let start = trimmed.iter().rposition(|&b| b == b'/').map_or(0, |p| p + 1);
    let name = &trimmed[start..];
    &name[..name.len().min(80)]
}
