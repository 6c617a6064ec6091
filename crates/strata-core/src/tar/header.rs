//! One 512-byte tar header block: field offsets, checksums and numeric fields.
//!
//! Layout per POSIX ustar (pax), with the old-GNU fields that share the `prefix` area.

/// Size of a tar block.
pub const BLOCK: usize = 512;

/// A raw header block with typed field accessors.
#[derive(Debug, Clone)]
pub struct RawHeader(pub [u8; BLOCK]);

/// Which dialect the magic field announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// POSIX ustar / pax (`ustar\0` `00`): `prefix` extends the name.
    Ustar,
    /// Old GNU (`ustar  \0`): the prefix area holds atime/ctime/sparse fields.
    Gnu,
    /// Pre-POSIX v7 (no magic).
    V7,
}

impl RawHeader {
    /// True when all 512 bytes are zero (the end-of-archive marker).
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }

    /// Checks the header checksum: the sum of all bytes with the checksum field read as
    /// spaces. Both the unsigned (POSIX) and signed (historic Sun/GNU) sums are accepted.
    pub fn checksum_ok(&self) -> Result<(), String> {
        let stored = parse_numeric(&self.0[148..156]).map_err(|e| format!("checksum field: {e}"))?;
        let (mut unsigned, mut signed) = (0u64, 0i64);
        for (i, &b) in self.0.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += u64::from(b);
            signed += i64::from(b as i8);
        }
        if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
            Ok(())
        } else {
            Err(format!("header checksum mismatch (stored {stored}, computed {unsigned})"))
        }
    }

    /// The dialect announced by the magic and version fields.
    pub fn dialect(&self) -> Result<Dialect, String> {
        match (&self.0[257..263], &self.0[263..265]) {
            (b"ustar\0", b"00") => Ok(Dialect::Ustar),
            (b"ustar ", b" \0") => Ok(Dialect::Gnu),
            (magic, _) if magic.iter().all(|&b| b == 0) => Ok(Dialect::V7),
            (magic, version) => Err(format!("unknown tar magic {magic:?} version {version:?}")),
        }
    }

    /// The type flag byte.
    pub fn typeflag(&self) -> u8 {
        self.0[156]
    }

    /// The name, with the ustar prefix joined when the dialect has one.
    pub fn name(&self, dialect: Dialect) -> Vec<u8> {
        let name = cstr(&self.0[0..100]);
        let prefix = if dialect == Dialect::Ustar { cstr(&self.0[345..500]) } else { &[] };
        if prefix.is_empty() { name.to_vec() } else { [prefix, b"/", name].concat() }
    }

    /// The link name field.
    pub fn linkname(&self) -> Vec<u8> {
        cstr(&self.0[157..257]).to_vec()
    }

    /// Numeric field by name, for error messages.
    pub fn number(&self, field: Field) -> Result<u64, String> {
        let (start, end) = field.range();
        parse_numeric(&self.0[start..end]).map_err(|e| format!("{} field: {e}", field.name()))
    }
}

/// The numeric header fields.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    /// Permission bits.
    Mode,
    /// Owner uid.
    Uid,
    /// Owner gid.
    Gid,
    /// Data size.
    Size,
    /// Modification time, seconds.
    Mtime,
    /// Device major.
    DevMajor,
    /// Device minor.
    DevMinor,
    /// Old-GNU sparse: the file's real size.
    GnuRealSize,
}

impl Field {
    fn range(self) -> (usize, usize) {
        match self {
            Field::Mode => (100, 108),
            Field::Uid => (108, 116),
            Field::Gid => (116, 124),
            Field::Size => (124, 136),
            Field::Mtime => (136, 148),
            Field::DevMajor => (329, 337),
            Field::DevMinor => (337, 345),
            Field::GnuRealSize => (483, 495),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Field::Mode => "mode",
            Field::Uid => "uid",
            Field::Gid => "gid",
            Field::Size => "size",
            Field::Mtime => "mtime",
            Field::DevMajor => "devmajor",
            Field::DevMinor => "devminor",
            Field::GnuRealSize => "realsize",
        }
    }
}

/// The bytes before the first NUL.
pub fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Parses a numeric field: octal digits (leading spaces allowed, ended by NUL or space)
/// or GNU base-256 (first byte 0x80). Negative base-256 values are refused.
pub fn parse_numeric(field: &[u8]) -> Result<u64, String> {
    if let Some((&first, rest)) = field.split_first() {
        if first & 0x80 != 0 {
            if first != 0x80 {
                return Err("negative or malformed base-256 number".into());
            }
            return rest.iter().try_fold(0u64, |acc, &b| {
                acc.checked_mul(256)
                    .map(|v| v + u64::from(b))
                    .ok_or_else(|| "base-256 number overflows 64 bits".to_string())
            });
        }
    }
    let start = field.iter().position(|&b| b != b' ').unwrap_or(field.len());
    let digits_end =
        field[start..].iter().position(|&b| !(b'0'..=b'7').contains(&b)).map_or(field.len(), |p| start + p);
    if field[digits_end..].iter().any(|&b| b != 0 && b != b' ') {
        return Err(format!("not an octal number: {:?}", String::from_utf8_lossy(field)));
    }
    field[start..digits_end].iter().try_fold(0u64, |acc, &b| {
        acc.checked_mul(8).map(|v| v + u64::from(b - b'0')).ok_or_else(|| "octal number overflows 64 bits".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields() {
        let cases: &[(&[u8], Result<u64, ()>)] = &[
            (b"0000644\0", Ok(0o644)),
            (b"  755 \0\0", Ok(0o755)),
            (b"\0\0\0\0\0\0\0\0", Ok(0)),
            (b"00000000017\0", Ok(0o17)),
            (b"0000x644\0", Err(())),
            (b"0000 644", Err(())),
            (&[0x80, 0, 0, 0, 0, 0, 1, 0], Ok(256)),
            (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe], Err(())),
            (&[0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], Err(())),
            (b"7777777777777777777777777\0", Err(())),
        ];
        for (field, want) in cases {
            assert_eq!(parse_numeric(field).map_err(|_| ()), *want, "field {field:?}");
        }
    }
}
