//! This process's mount table, from `/proc/self/mountinfo`: one parser for the overlay
//! probe and strata-fuse (mount devices, the daemon's private namespace).

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One mount: its device number and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The device's (major, minor), as `/sys/class/bdi/MAJOR:MINOR` names it.
    pub device: (u32, u32),
    pub point: PathBuf,
}

/// The mounts of this process's namespace, in mount order.
///
/// # Errors
/// `/proc/self/mountinfo` cannot be read.
pub fn mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

fn parse(info: &str) -> Vec<MountEntry> {
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let (major, minor) = fields.get(2)?.split_once(':')?;
            let point = PathBuf::from(unescape(fields.get(4)?));
            Some(MountEntry { device: (major.parse().ok()?, minor.parse().ok()?), point })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> OsString {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_escapes() {
        let info = "36 35 0:52 / /mnt/a\\040b rw,relatime - tmpfs t rw\n37 35 0:53 / /x rw - fuse strata rw\n";
        let mounts = parse(info);
        assert_eq!(mounts[0], MountEntry { device: (0, 52), point: PathBuf::from("/mnt/a b") });
        assert_eq!(mounts[1].point, PathBuf::from("/x"));
        assert_eq!(unescape(r"a\134b\011"), OsString::from("a\\b\t"));
    }
}
