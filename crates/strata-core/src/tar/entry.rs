//! A fully resolved tar entry: the header plus whatever PAX / GNU long-name headers said.

/// What kind of filesystem object an entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (data follows).
    File,
    /// A directory.
    Dir,
    /// A symbolic link (`link` holds the target, stored verbatim).
    Symlink,
    /// A hard link to an earlier path (`link` holds it).
    Hardlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
}

/// A point in time with nanosecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    /// Seconds since the epoch (may be negative).
    pub secs: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nanos: u32,
}

/// The data regions of an old-GNU sparse file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseMap {
    /// The file's full size, holes included.
    pub real_size: u64,
    /// `(offset, length)` of each data region, in archive order.
    pub regions: Vec<(u64, u64)>,
}

/// One layer entry, as the apply engine sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Zero-based position among the layer's entries (metadata headers not counted).
    pub index: u64,
    /// Offset of the entry's first header in the uncompressed stream.
    pub offset: u64,
    /// The path as recorded (PAX `path`, GNU long name or the header name).
    pub path: Vec<u8>,
    /// The object type.
    pub kind: EntryKind,
    /// Symlink target or hard link path.
    pub link: Option<Vec<u8>>,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// Access time, when the layer records one.
    pub atime: Option<Timestamp>,
    /// Bytes of data stored in the archive for this entry.
    pub size: u64,
    /// Device numbers for character and block devices.
    pub device: (u64, u64),
    /// Extended attributes from `SCHILY.xattr.*`, in archive order.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Hole layout for old-GNU sparse files.
    pub sparse: Option<SparseMap>,
}

impl Entry {
    /// The path, lossily decoded, for messages.
    pub fn display_path(&self) -> String {
        crate::path::for_message(&self.path)
    }
}

/// Constructors for building layers (tests, benches, the demo, diffs).
impl Entry {
    fn new(path: &str, kind: EntryKind, mode: u32) -> Entry {
        Entry {
            index: 0,
            offset: 0,
            path: path.as_bytes().to_vec(),
            kind,
            link: None,
            mode,
            uid: 0,
            gid: 0,
            mtime: Timestamp { secs: 1_700_000_000, nanos: 0 },
            atime: None,
            size: 0,
            device: (0, 0),
            xattrs: Vec::new(),
            sparse: None,
        }
    }

    /// A regular file (data is given to the builder).
    pub fn file(path: &str, mode: u32) -> Entry {
        Entry::new(path, EntryKind::File, mode)
    }

    /// A directory.
    pub fn dir(path: &str, mode: u32) -> Entry {
        Entry::new(path, EntryKind::Dir, mode)
    }

    /// A symlink to `target` (stored verbatim).
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry { link: Some(target.as_bytes().to_vec()), ..Entry::new(path, EntryKind::Symlink, 0o777) }
    }

    /// A hard link to `target`, a path in the layer.
    pub fn hardlink(path: &str, target: &str) -> Entry {
        Entry { link: Some(target.as_bytes().to_vec()), ..Entry::new(path, EntryKind::Hardlink, 0o644) }
    }

    /// A character device.
    pub fn char_device(path: &str, major: u64, minor: u64) -> Entry {
        Entry { device: (major, minor), ..Entry::new(path, EntryKind::CharDevice, 0o666) }
    }

    /// A block device.
    pub fn block_device(path: &str, major: u64, minor: u64) -> Entry {
        Entry { device: (major, minor), ..Entry::new(path, EntryKind::BlockDevice, 0o660) }
    }

    /// A fifo.
    pub fn fifo(path: &str) -> Entry {
        Entry::new(path, EntryKind::Fifo, 0o644)
    }

    /// A whiteout entry `DIR/.wh.NAME` for `path` = `DIR/NAME`.
    pub fn whiteout(path: &str) -> Entry {
        let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
        let wh = if dir.is_empty() { format!(".wh.{name}") } else { format!("{dir}/.wh.{name}") };
        Entry::new(&wh, EntryKind::File, 0o644)
    }

    /// The opaque marker `DIR/.wh..wh..opq`.
    pub fn opaque(dir: &str) -> Entry {
        let marker = if dir.is_empty() { ".wh..wh..opq".to_owned() } else { format!("{dir}/.wh..wh..opq") };
        Entry::new(&marker, EntryKind::File, 0o644)
    }

    /// Sets the owner.
    pub fn owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets the modification time.
    pub fn mtime(mut self, secs: i64, nanos: u32) -> Entry {
        self.mtime = Timestamp { secs, nanos };
        self
    }

    /// Adds an extended attribute.
    pub fn xattr(mut self, key: &str, value: &[u8]) -> Entry {
        self.xattrs.push((key.to_owned(), value.to_vec()));
        self
    }
}
