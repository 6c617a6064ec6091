//! Tar header blocks crafted byte by byte, for hostile and edge-case inputs: fields cut
//! to their slot, any type flag, checksums recomputed on demand. Written independently
//! of strata-core's writer on purpose: an oracle that shared the encoder under test
//! could not catch its bugs.

/// A tar block.
pub const BLOCK: usize = 512;

/// The fields of one ustar header, for building blocks by hand.
#[derive(Debug, Clone, Default)]
pub struct HeaderFields<'a> {
    /// Type flag byte (`b'0'`, `b'x'`, ...).
    pub typeflag: u8,
    /// `name` field (<= 100 bytes).
    pub name: &'a [u8],
    /// `prefix` field (<= 155 bytes).
    pub prefix: &'a [u8],
    /// `linkname` field (<= 100 bytes).
    pub link: &'a [u8],
    /// Size field.
    pub size: u64,
    /// Mode field.
    pub mode: u32,
    /// Uid field.
    pub uid: u64,
    /// Gid field.
    pub gid: u64,
    /// Mtime field (seconds).
    pub mtime: u64,
    /// Device major/minor.
    pub device: (u64, u64),
}

impl HeaderFields<'_> {
    /// A POSIX ustar block with these fields; call [`set_checksum`] after any change.
    /// Fields too long for their slot are cut (hostile tests rely on exact bytes).
    pub fn block(&self) -> [u8; BLOCK] {
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
pub fn octal(field: &mut [u8], value: u64) {
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
pub fn set_checksum(block: &mut [u8; BLOCK]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
}

/// A PAX extended header (`x`) block plus its padded data.
pub fn pax_header(path: &[u8], records: &[u8]) -> Vec<u8> {
    meta_header(b'x', &[b"PaxHeaders/", last_component(path)].concat(), records)
}

/// A GNU long name (`L`) or long link (`K`) header plus its padded, NUL-ended data.
pub fn gnu_long_header(typeflag: u8, value: &[u8]) -> Vec<u8> {
    meta_header(typeflag, b"././@LongLink", &[value, b"\0"].concat())
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
