//! How many containerd namespaces hold a committed snapshot. containerd keys its own
//! snapshots per namespace, but the fast path hands one store snapshot (a chain
//! `strata unpack` made, or another namespace's pull) to every namespace that asks, and
//! each one's garbage collection later calls Remove with the same key. A count in a
//! reserved label makes that Remove release one hold; the snapshot goes with the last.
//! A snapshot strata made itself counts one hold for strata, never released by
//! containerd (`strata gc` decides about it).

use std::collections::BTreeMap;

use strata_store::{Info, Store};

use crate::status::from_store;

/// The label with the count; `strata.io/` labels are strata's own (see [`keep_reserved`]).
pub const HOLDERS: &str = "strata.io/containerd.holders";
const RESERVED_PREFIX: &str = "strata.io/";

fn count(labels: &BTreeMap<String, String>) -> Option<u64> {
    labels.get(HOLDERS).and_then(|v| v.parse().ok())
}

/// A snapshot containerd committed: its namespace holds it.
pub(crate) fn committed(labels: &mut BTreeMap<String, String>) {
    labels.insert(HOLDERS.to_owned(), "1".to_owned());
}

/// One more namespace holds `labels`' snapshot (strata's own snapshots start at 1).
pub(crate) fn adopted(labels: &mut BTreeMap<String, String>) {
    let held = count(labels).unwrap_or(1);
    labels.insert(HOLDERS.to_owned(), (held + 1).to_string());
}

/// A namespace lets go of `info`'s snapshot: whether others still hold it (then the
/// count is lowered and nothing is removed).
///
/// # Errors
/// The store fails to record the new count.
pub(crate) fn release(store: &Store, info: &Info) -> Result<bool, tonic::Status> {
    match count(&info.labels) {
        Some(held) if held > 1 => {
            let mut labels = info.labels.clone();
            labels.insert(HOLDERS.to_owned(), (held - 1).to_string());
            store.update(&info.key, labels).map_err(|e| from_store(&e))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Whether `key` is one of strata's own labels: never shown to containerd, never set
/// by it.
pub(crate) fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// An Update from containerd never sets or drops strata's own labels.
pub(crate) fn keep_reserved(old: &BTreeMap<String, String>, new: &mut BTreeMap<String, String>) {
    new.retain(|k, _| !is_reserved(k));
    new.extend(old.iter().filter(|(k, _)| is_reserved(k)).map(|(k, v)| (k.clone(), v.clone())));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_start_at_the_owner_and_updates_cannot_touch_them() {
        let mut own = BTreeMap::new();
        adopted(&mut own);
        assert_eq!(count(&own), Some(2), "strata's own snapshot plus the adopting namespace");
        let mut theirs = BTreeMap::new();
        committed(&mut theirs);
        adopted(&mut theirs);
        assert_eq!(count(&theirs), Some(2));
        let mut update = BTreeMap::from([(HOLDERS.to_owned(), "0".to_owned()), ("a".to_owned(), "b".to_owned())]);
        keep_reserved(&theirs, &mut update);
        assert_eq!(count(&update), Some(2));
        assert_eq!(update.get("a").map(String::as_str), Some("b"));
    }
}
