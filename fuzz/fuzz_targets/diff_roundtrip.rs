//! The diff writer's output read back: a fuzzed layer applied flat gives a tree; that
//! tree written as a layer by `strata_core::diff` must read back with the tar reader
//! without error and apply to the same tree (types, modes, sizes, contents, targets).
#![no_main]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use strata_core::diff::{DiffOptions, write_tar};
use strata_core::tar::Reader;
use strata_core::{ApplyBuilder, Mode};

fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read").map(|e| e.expect("entry")) {
            let path = entry.path();
            let md = std::fs::symlink_metadata(&path).expect("lstat");
            let what = if md.is_dir() {
                stack.push(path.clone());
                format!("dir {:o}", md.permissions().mode() & 0o7777)
            } else if md.file_type().is_symlink() {
                format!("link {:?}", std::fs::read_link(&path).expect("readlink"))
            } else if md.is_file() {
                format!(
                    "file {:o} {} {:?}",
                    md.permissions().mode() & 0o7777,
                    md.len(),
                    std::fs::read(&path).expect("read")
                )
            } else {
                format!("other {:o} {}", md.mode(), md.rdev())
            };
            out.insert(path.strip_prefix(root).expect("under").display().to_string(), what);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let flat = || ApplyBuilder::new(Mode::Flat).build().expect("options");
    if flat().apply(data, &a).is_err() {
        return;
    }
    let options = DiffOptions { xattrs: strata_core::ovl::XattrNamespace::native(), ..DiffOptions::default() };
    let mut layer = Vec::new();
    write_tar(&a, &options, &mut layer).expect("an applied tree always diffs");
    let mut reader = Reader::new(&layer[..], "plain");
    loop {
        match reader.next_entry() {
            Ok(Some(_)) => {
                while !reader.data().expect("data").is_empty() {
                    let n = reader.data().expect("data").len();
                    reader.consume(n);
                }
            }
            Ok(None) => break,
            Err(e) => panic!("the diff writer wrote a layer its reader refuses: {e}"),
        }
    }
    flat().apply(&layer[..], &b).expect("the diff applies");
    assert_eq!(snapshot(&a), snapshot(&b), "apply(diff(tree)) differs from the tree");
});
