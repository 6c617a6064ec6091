//! The snapshotter's request handling that parses caller text: containerd's filter
//! language (List) on any string, matched against a snapshot. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_snapshotter::Filter;
use strata_store::{Info, Kind};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let info = Info {
        key: "default/3/sha256:abc".into(),
        parent: Some("default/2/sha256:def".into()),
        kind: Kind::Committed,
        labels: [("containerd.io/snapshot.ref".to_owned(), "sha256:abc".to_owned())].into_iter().collect(),
        created: 0,
        updated: 0,
        root_opaque: false,
    };
    if let Ok(filter) = Filter::parse(text) {
        let _ = filter.matches(&info);
    }
});
