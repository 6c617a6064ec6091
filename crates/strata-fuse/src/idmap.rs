//! fuse-overlayfs's `uidmapping=`/`gidmapping=`: ids as stored in the layers shown to
//! the kernel as other ids, so one copy of an image serves containers in different user
//! namespaces without a chown (podman passes them for `--uidmap` and rootless runs).

use crate::{Error, Result};

/// The id shown for a stored id no range covers, and stored for a shown one: the
/// kernel's overflow id, as fuse-overlayfs uses.
const OVERFLOW_ID: u32 = 65534;

/// Ranges of `stored:shown:len` (an empty map shows every id as it is stored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    ranges: Vec<(u32, u32, u32)>,
}

impl IdMap {
    /// Parses `STORED:SHOWN:LEN[:STORED:SHOWN:LEN...]`. Empty fields are skipped, as
    /// fuse-overlayfs does (podman writes `uidmapping=:0:100000:65536`).
    ///
    /// # Errors
    /// [`Error::Config`] naming the option for a field that is not a number, a count
    /// of numbers that is not a multiple of three, or a range past `u32::MAX`.
    pub fn parse(option: &str, value: &str) -> Result<IdMap> {
        let bad = |why: &str| Error::Config(format!("{option}={value}: {why}"));
        let numbers = value
            .split(':')
            .filter(|f| !f.is_empty())
            .map(|f| f.parse::<u32>().map_err(|_| bad(&format!("{f:?} is not an id"))))
            .collect::<Result<Vec<_>>>()?;
        if numbers.is_empty() || numbers.len() % 3 != 0 {
            return Err(bad("expected ID:MAPPED-ID:LENGTH triples"));
        }
        let ranges = numbers.chunks(3).map(|c| (c[0], c[1], c[2])).collect::<Vec<_>>();
        for &(stored, shown, len) in &ranges {
            if stored.checked_add(len).is_none() || shown.checked_add(len).is_none() {
                return Err(bad("a range runs past the largest id"));
            }
        }
        Ok(IdMap { ranges })
    }

    /// The id the kernel sees for an id stored in a layer.
    pub(crate) fn shown(&self, stored: u32) -> u32 {
        self.translate(stored, |&(from, to, len)| (from, to, len))
    }

    /// The id stored for an id the kernel gives (a caller's, a chown's).
    pub(crate) fn stored(&self, shown: u32) -> u32 {
        self.translate(shown, |&(from, to, len)| (to, from, len))
    }

    /// `id` through the first range that covers it, each range read by `oriented` as
    /// (source start, destination start, length).
    fn translate(&self, id: u32, oriented: impl Fn(&(u32, u32, u32)) -> (u32, u32, u32)) -> u32 {
        if self.ranges.is_empty() {
            return id;
        }
        self.ranges
            .iter()
            .map(oriented)
            .find(|&(source, _, len)| id >= source && id - source < len)
            .map_or(OVERFLOW_ID, |(source, destination, _)| destination + (id - source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_and_fuse_overlayfs_forms_map_both_ways() {
        let map = IdMap::parse("uidmapping", ":0:100000:65536").expect("podman's form");
        assert_eq!((map.shown(0), map.shown(1000), map.shown(70000)), (100000, 101000, OVERFLOW_ID));
        assert_eq!((map.stored(100000), map.stored(101000), map.stored(5)), (0, 1000, OVERFLOW_ID));
        let map = IdMap::parse("uidmapping", "0:1000:1:1:110000:65536").expect("two ranges");
        assert_eq!((map.shown(0), map.shown(1), map.shown(2)), (1000, 110000, 110001));
        assert_eq!(IdMap::default().shown(42), 42);
        for bad in ["0:1", "a:b:c", "0:4294967295:2", ""] {
            assert!(IdMap::parse("uidmapping", bad).is_err(), "{bad}");
        }
    }
}
