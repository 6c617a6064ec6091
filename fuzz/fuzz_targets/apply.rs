//! The whole apply engine on any bytes (plain, gzip or zstd: the stream is sniffed), in
//! flat form or in overlay form over a parent layer, into a fresh directory that has a
//! sibling beside it. Whatever the layer says, nothing outside the target changes, and
//! a flat result holds no whiteout or opaque marker.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use strata_core::{ApplyBuilder, Mode};

fn outside_intact(root: &Path) {
    let mut names: Vec<_> =
        std::fs::read_dir(root).expect("read root").map(|e| e.expect("entry").file_name()).collect();
    names.sort();
    assert_eq!(names, ["outside", "parent", "target"], "something was written beside the target");
    assert_eq!(std::fs::read(root.join("outside/secret")).expect("outside file"), b"keep");
    assert_eq!(std::fs::read(root.join("parent/base")).expect("parent file"), b"base");
}

fn no_markers_left(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read").map(|e| e.expect("entry")) {
        let name = entry.file_name();
        assert!(
            !name.as_encoded_bytes().starts_with(b".wh."),
            "a whiteout marker left in flat form: {:?}",
            entry.path()
        );
        let ft = entry.file_type().expect("type");
        if ft.is_dir() {
            no_markers_left(&entry.path());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, layer)) = data.split_first() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in ["outside", "parent", "target"] {
        std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
    }
    std::fs::write(dir.path().join("outside/secret"), b"keep").expect("write");
    std::fs::write(dir.path().join("parent/base"), b"base").expect("write");
    let target = dir.path().join("target");
    let overlay = mode & 1 == 1;
    let builder = if overlay {
        ApplyBuilder::new(Mode::Overlay).parent(&dir.path().join("parent"))
    } else {
        ApplyBuilder::new(Mode::Flat)
    };
    let applied = builder.build().expect("options").apply(layer, &target);
    outside_intact(dir.path());
    if applied.is_ok() && !overlay {
        no_markers_left(&target);
    }
});
