//! Tar streams: a strict reader for layers, and a writer for tests, demos and diffs.

mod entry;
pub mod header;
pub mod pax;
mod reader;
mod writer;

pub use entry::{Entry, EntryKind, SparseMap, Timestamp};
pub use reader::{MAX_META_HEADER, Reader};
pub use writer::Builder;
