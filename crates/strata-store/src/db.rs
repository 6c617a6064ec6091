//! The metadata database: SQLite through rusqlite.
//!
//! Why SQLite rather than redb: the store is shared by several processes at once (every
//! `strata` invocation, plus an embedding runtime). redb allows one process per database
//! file; SQLite's WAL mode gives multi-process ACID transactions with a busy timeout, and
//! `BEGIN IMMEDIATE` serialises the few check-then-write steps (commit a layer, clean up)
//! across processes without a lock of our own. It is the most deployed embedded database
//! there is, and `bundled` builds it from source, so no system library is needed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::model::{ImageRecord, Info, Kind, MountRecord};
use crate::error::{Error, Result};
use strata_core::ovl::XattrNamespace;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS snapshots (
    key TEXT PRIMARY KEY,
    dir TEXT NOT NULL UNIQUE,
    parent TEXT REFERENCES snapshots(key),
    kind TEXT NOT NULL,
    root_opaque INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
    key TEXT NOT NULL REFERENCES snapshots(key) ON DELETE CASCADE ON UPDATE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (key, name)
);
-- The snapshotter finds a layer by the chain containerd names in a label.
CREATE INDEX IF NOT EXISTS labels_by_value ON labels (name, value);
-- The xattr namespace each snapshot's overlay markers are in (strata_core::ovl). A row is
-- absent for snapshots written before it was recorded: those are in the namespace the
-- store's owner writes (trusted for root, user otherwise).
CREATE TABLE IF NOT EXISTS xattr_ns (
    key TEXT PRIMARY KEY REFERENCES snapshots(key) ON DELETE CASCADE ON UPDATE CASCADE,
    ns TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mounts (
    target TEXT PRIMARY KEY,
    key TEXT REFERENCES snapshots(key),
    image TEXT NOT NULL,
    driver TEXT NOT NULL,
    read_only INTEGER NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    name TEXT PRIMARY KEY,
    manifest_digest TEXT,
    config_digest TEXT NOT NULL,
    top_chain TEXT REFERENCES snapshots(key),
    created INTEGER NOT NULL
);
-- Where an image was unpacked from (its layout or archive), for `strata commit` to read
-- the base image's config and blobs. A table of its own: older stores gain it on open.
CREATE TABLE IF NOT EXISTS image_sources (
    name TEXT PRIMARY KEY REFERENCES images(name) ON DELETE CASCADE ON UPDATE CASCADE,
    path TEXT NOT NULL
);
";

pub(crate) fn err(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |source| Error::Db { op, source }
}

/// Opens (creating) the database with WAL, full sync and a generous busy timeout.
pub(crate) fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(err("open"))?;
    conn.busy_timeout(Duration::from_secs(120)).map_err(err("set busy timeout"))?;
    // Switching a new database to WAL needs it to itself for a moment, and SQLite may
    // answer BUSY without waiting when several processes create the store at once.
    retry_busy(|| conn.pragma_update(None, "journal_mode", "WAL")).map_err(err("enable WAL"))?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(err("set synchronous"))?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(err("enable foreign keys"))?;
    retry_busy(|| conn.execute_batch(SCHEMA)).map_err(err("create schema"))?;
    Ok(conn)
}

fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let mut delay = Duration::from_millis(5);
    for _ in 0..40 {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
    f()
}

/// A row of `snapshots`, with the dir name.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub info: Info,
    pub dir: String,
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

pub(crate) fn get(tx: &Connection, key: &str) -> Result<Option<Row>> {
    let row = tx
        .query_row(
            "SELECT key, dir, parent, kind, root_opaque, created, updated FROM snapshots WHERE key = ?1",
            params![key],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            },
        )
        .optional()
        .map_err(err("read snapshot"))?;
    let Some((key, dir, parent, kind, root_opaque, created, updated)) = row else {
        return Ok(None);
    };
    let labels = labels(tx, &key)?;
    let kind = Kind::parse(&kind).unwrap_or(Kind::Committed);
    Ok(Some(Row { info: Info { key, parent, kind, labels, created, updated, root_opaque }, dir }))
}

fn labels(tx: &Connection, key: &str) -> Result<BTreeMap<String, String>> {
    let mut stmt = tx.prepare("SELECT name, value FROM labels WHERE key = ?1").map_err(err("read labels"))?;
    let rows = stmt
        .query_map(params![key], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(err("read labels"))?;
    rows.collect::<rusqlite::Result<_>>().map_err(err("read labels"))
}

pub(crate) fn insert(tx: &Transaction<'_>, info: &Info, dir: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO snapshots (key, dir, parent, kind, root_opaque, created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![info.key, dir, info.parent, info.kind.as_str(), info.root_opaque, info.created, info.updated],
    )
    .map_err(err("insert snapshot"))?;
    set_labels(tx, &info.key, &info.labels)
}

/// Records the xattr namespace of snapshot `key`.
pub(crate) fn set_ns(tx: &Transaction<'_>, key: &str, ns: XattrNamespace) -> Result<()> {
    tx.execute(
        "INSERT INTO xattr_ns (key, ns) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET ns = ?2",
        params![key, ns.name()],
    )
    .map_err(err("record xattr namespace"))?;
    Ok(())
}

/// The recorded xattr namespace of snapshot `key` (`None`: written before it was kept).
/// A snapshot of a parent chain, with what mounting it needs.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub key: String,
    pub dir: String,
    pub kind: Kind,
    pub root_opaque: bool,
    /// The recorded namespace of its overlay markers (see `xattr_ns`).
    pub ns: Option<XattrNamespace>,
    pub parent: Option<String>,
}

/// Deeper than any image (the kernel stacks 500 lowers): a parent cycle in a damaged
/// database ends here instead of looping.
const MAX_CHAIN: i64 = 100_000;

/// Snapshot `key` and its ancestors, `key` first, in one query: a mount of a 500-layer
/// image asks once, not three times per layer. Empty if `key` does not exist.
pub(crate) fn chain(conn: &Connection, key: &str) -> Result<Vec<Link>> {
    let mut stmt = conn
        .prepare(
            "WITH RECURSIVE up(key, depth) AS (
                 SELECT ?1, 0
                 UNION ALL
                 SELECT s.parent, up.depth + 1 FROM snapshots s JOIN up ON s.key = up.key
                 WHERE s.parent IS NOT NULL AND up.depth < ?2)
             SELECT s.key, s.dir, s.kind, s.root_opaque, x.ns, s.parent
             FROM up JOIN snapshots s ON s.key = up.key LEFT JOIN xattr_ns x ON x.key = s.key
             ORDER BY up.depth",
        )
        .map_err(err("read parent chain"))?;
    let rows = stmt
        .query_map(params![key, MAX_CHAIN], |r| {
            Ok(Link {
                key: r.get(0)?,
                dir: r.get(1)?,
                kind: Kind::parse(&r.get::<_, String>(2)?).unwrap_or(Kind::Committed),
                root_opaque: r.get(3)?,
                ns: r.get::<_, Option<String>>(4)?.as_deref().and_then(XattrNamespace::parse),
                parent: r.get(5)?,
            })
        })
        .map_err(err("read parent chain"))?;
    let chain: Vec<Link> = rows.collect::<rusqlite::Result<_>>().map_err(err("read parent chain"))?;
    // The walk ends at a base (no parent); a parent it could not reach is missing or,
    // in a damaged database, part of a cycle.
    if let Some(missing) = chain.last().and_then(|l| l.parent.clone()) {
        return Err(Error::NotFound { what: "parent snapshot", key: missing });
    }
    Ok(chain)
}

pub(crate) fn get_ns(conn: &Connection, key: &str) -> Result<Option<XattrNamespace>> {
    let name: Option<String> = conn
        .query_row("SELECT ns FROM xattr_ns WHERE key = ?1", params![key], |r| r.get(0))
        .optional()
        .map_err(err("read xattr namespace"))?;
    Ok(name.as_deref().and_then(XattrNamespace::parse))
}

pub(crate) fn set_labels(tx: &Transaction<'_>, key: &str, labels: &BTreeMap<String, String>) -> Result<()> {
    tx.execute("DELETE FROM labels WHERE key = ?1", params![key]).map_err(err("write labels"))?;
    for (name, value) in labels {
        tx.execute("INSERT INTO labels (key, name, value) VALUES (?1, ?2, ?3)", params![key, name, value])
            .map_err(err("write labels"))?;
    }
    Ok(())
}

pub(crate) fn keys_with_label(conn: &Connection, name: &str, value: &str) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare("SELECT key FROM labels WHERE name = ?1 AND value = ?2 ORDER BY key")
        .map_err(err("find by label"))?;
    let rows = stmt.query_map(params![name, value], |r| r.get::<_, String>(0)).map_err(err("find by label"))?;
    rows.collect::<rusqlite::Result<_>>().map_err(err("find by label"))
}

pub(crate) fn all_keys(tx: &Connection) -> Result<Vec<String>> {
    let mut stmt = tx.prepare("SELECT key FROM snapshots ORDER BY created, key").map_err(err("list snapshots"))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(err("list snapshots"))?;
    rows.collect::<rusqlite::Result<_>>().map_err(err("list snapshots"))
}

pub(crate) fn all_dirs(tx: &Connection) -> Result<Vec<String>> {
    let mut stmt = tx.prepare("SELECT dir FROM snapshots").map_err(err("list snapshot dirs"))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(err("list snapshot dirs"))?;
    rows.collect::<rusqlite::Result<_>>().map_err(err("list snapshot dirs"))
}

pub(crate) fn children(tx: &Connection, key: &str) -> Result<Vec<String>> {
    let mut stmt = tx.prepare("SELECT key FROM snapshots WHERE parent = ?1").map_err(err("list children"))?;
    let rows = stmt.query_map(params![key], |r| r.get::<_, String>(0)).map_err(err("list children"))?;
    rows.collect::<rusqlite::Result<_>>().map_err(err("list children"))
}

pub(crate) fn put_image(tx: &Transaction<'_>, image: &ImageRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO images (name, manifest_digest, config_digest, top_chain, created) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(name) DO UPDATE SET manifest_digest = ?2, config_digest = ?3, top_chain = ?4, created = ?5",
        params![image.name, image.manifest_digest, image.config_digest, image.top_chain, image.created],
    )
    .map_err(err("record image"))?;
    match &image.source {
        Some(path) => tx.execute(
            "INSERT INTO image_sources (name, path) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET path = ?2",
            params![image.name, path],
        ),
        None => tx.execute("DELETE FROM image_sources WHERE name = ?1", params![image.name]),
    }
    .map_err(err("record image source"))?;
    Ok(())
}

pub(crate) fn images(tx: &Connection) -> Result<Vec<ImageRecord>> {
    let mut stmt = tx
        .prepare(
            "SELECT images.name, manifest_digest, config_digest, top_chain, created, image_sources.path
             FROM images LEFT JOIN image_sources ON image_sources.name = images.name ORDER BY images.name",
        )
        .map_err(err("list images"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(ImageRecord {
                name: r.get(0)?,
                manifest_digest: r.get(1)?,
                config_digest: r.get(2)?,
                top_chain: r.get(3)?,
                created: r.get(4)?,
                source: r.get(5)?,
            })
        })
        .map_err(err("list images"))?;
    rows.collect::<rusqlite::Result<_>>().map_err(err("list images"))
}

pub(crate) fn put_mount(tx: &Transaction<'_>, m: &MountRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO mounts (target, key, image, driver, read_only, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(target) DO UPDATE SET key = ?2, image = ?3, driver = ?4, read_only = ?5, created = ?6",
        params![m.target, m.key, m.image, m.driver, m.read_only, m.created],
    )
    .map_err(err("record mount"))?;
    Ok(())
}

pub(crate) fn mounts(tx: &Connection) -> Result<Vec<MountRecord>> {
    let mut stmt = tx
        .prepare("SELECT target, key, image, driver, read_only, created FROM mounts ORDER BY target")
        .map_err(err("list mounts"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(MountRecord {
                target: r.get(0)?,
                key: r.get(1)?,
                image: r.get(2)?,
                driver: r.get(3)?,
                read_only: r.get(4)?,
                created: r.get(5)?,
            })
        })
        .map_err(err("list mounts"))?;
    rows.collect::<rusqlite::Result<_>>().map_err(err("list mounts"))
}
