//! What the store hands out: snapshot info, usage, image records.

use std::collections::BTreeMap;
use std::fmt;

/// The containerd snapshotter's three kinds of snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Read-only: a layer applied on its parent (or a committed active snapshot).
    Committed,
    /// Writable: an upper dir and a work dir over a committed parent chain.
    Active,
    /// Read-only mount of a committed chain.
    View,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Committed => "committed",
            Kind::Active => "active",
            Kind::View => "view",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Kind> {
        match s {
            "committed" => Some(Kind::Committed),
            "active" => Some(Kind::Active),
            "view" => Some(Kind::View),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The key (committed layers: their ChainID).
    pub key: String,
    /// The parent's key.
    pub parent: Option<String>,
    /// The kind.
    pub kind: Kind,
    /// Caller labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Last update, seconds since the epoch.
    pub updated: i64,
    /// The layer made its root opaque: mounts stop the lower stack here.
    pub root_opaque: bool,
}

/// Disk use of one snapshot's own dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Allocated bytes (hard-linked files counted once).
    pub bytes: u64,
    /// Inodes (hard-linked files counted once).
    pub inodes: u64,
}

/// An image name recorded in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// The name (`app:v1`, or what the user chose).
    pub name: String,
    /// The manifest digest, when the image format has one.
    pub manifest_digest: Option<String>,
    /// The config digest (image id).
    pub config_digest: String,
    /// The top layer's ChainID (`None` for an image without layers).
    pub top_chain: Option<String>,
    /// When it was recorded, seconds since the epoch.
    pub created: i64,
    /// The layout or archive it was unpacked from (absolute), when known: where
    /// `strata commit` reads the base image's config and layer blobs.
    pub source: Option<String>,
}

/// A mount made by a strata command, so `strata ps` and `strata umount` can find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRecord {
    /// The mount point (canonical path).
    pub target: String,
    /// The active snapshot mounted (`None` for a read-only mount of an image's layers).
    pub key: Option<String>,
    /// The image name.
    pub image: String,
    /// `overlay` or `fuse`.
    pub driver: String,
    /// Read-only mount.
    pub read_only: bool,
    /// When it was mounted, seconds since the epoch.
    pub created: i64,
}
