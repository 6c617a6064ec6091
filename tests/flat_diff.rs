//! Flattened == merged view, with the kernel as the oracle: layer stacks applied flat
//! must equal kernel overlayfs's mount of the same stacks in overlay form, entry by entry
//! (type, mode, owner, content, xattrs, times, hardlink groups).
//!
//! The seeded random stacks mix files, dirs, symlinks, whiteouts and opaque markers
//! placed before and after the layer's own entries at several depths, and dir / file /
//! symlink replacements. `STRATA_FLAT_DIFF_STACKS` and `STRATA_FLAT_DIFF_SEED` run more.

use strata::core::tar::Entry;

use crate::privileged::{KERNEL_PHANTOM, flat_and_merged};
use crate::util::{Rng, e, layer, require_privileged};

/// A layer whose root carries fixed times (else the root's mtime is "now" and differs).
fn rooted(entries: &[(Entry, &[u8])]) -> Vec<u8> {
    let mut all = vec![e(Entry::dir("./", 0o755).mtime(1_600_000_000, 0))];
    all.extend(entries.iter().cloned());
    layer(&all)
}

fn assert_flat_equals_merged(what: &str, layers: &[Vec<u8>]) {
    let (flat, merged) = flat_and_merged(layers, false).unwrap_or_else(|err| panic!("{what}: {err}"));
    let diff = flat.diff(&merged);
    assert!(diff.is_empty(), "{what}: flat apply differs from the kernel's merged view:\n{}", diff.join("\n"));
}

#[test]
fn privileged_opaque_marker_after_nested_entries_hides_deeper_lower_content() {
    if !require_privileged("privileged_opaque_marker_after_nested_entries_hides_deeper_lower_content") {
        return;
    }
    let lower = rooted(&[(Entry::file("a/b/c/bar", 0o644), b"bar"), (Entry::file("a/keep", 0o644), b"k")]);
    let upper = rooted(&[
        e(Entry::dir("a", 0o755)),
        e(Entry::dir("a/b", 0o755)),
        e(Entry::dir("a/b/c", 0o755)),
        (Entry::file("a/b/c/foo", 0o644), b"foo"),
        e(Entry::opaque("a")),
    ]);
    let layers = [lower, upper];
    assert_flat_equals_merged("marker last", &layers);
    let (flat, _) = flat_and_merged(&layers, false).expect("apply");
    assert!(!flat.has("a/b/c/bar") && !flat.has("a/keep") && flat.has("a/b/c/foo"), "{:?}", flat.paths());
}

#[test]
fn privileged_whiteout_below_a_whited_out_dir_leaves_nothing() {
    if !require_privileged("privileged_whiteout_below_a_whited_out_dir_leaves_nothing") {
        return;
    }
    let lower = rooted(&[(Entry::file("foo/bar", 0o644), b"bar"), (Entry::file("keep", 0o644), b"k")]);
    let upper = rooted(&[e(Entry::whiteout("foo")), e(Entry::whiteout("foo/bar"))]);
    let layers = [lower, upper];
    assert_flat_equals_merged("rm -rf style", &layers);
    let (flat, _) = flat_and_merged(&layers, false).expect("apply");
    assert_eq!(flat.paths(), ["", "keep"]);
}

const NAMES: [&str; 3] = ["a", "b", "c"];

fn random_path(rng: &mut Rng) -> String {
    let depth = 1 + rng.below(3);
    (0..depth).map(|_| NAMES[rng.below(NAMES.len())]).collect::<Vec<_>>().join("/")
}

/// One random layer: ordinary entries, whiteouts and opaque markers in random order.
fn random_layer(rng: &mut Rng, serial: &mut u32) -> (Vec<u8>, String) {
    let mut entries: Vec<(Entry, Vec<u8>)> = Vec::new();
    let mut used = std::collections::HashSet::new();
    let mut leaves = Vec::new();
    for _ in 0..2 + rng.below(6) {
        let path = random_path(rng);
        let kind = rng.below(7);
        // The engine refuses entries below a non-directory of the same layer; the
        // generator makes layers a real writer would.
        let is_leaf = kind <= 1 || kind == 3;
        let below_leaf = leaves.iter().any(|l: &String| path.starts_with(&format!("{l}/")));
        let above_used = used.iter().any(|u: &String| u.starts_with(&format!("{path}/")));
        if below_leaf || (is_leaf && above_used) || !used.insert(path.clone()) {
            continue;
        }
        if is_leaf {
            leaves.push(path.clone());
        }
        *serial += 1;
        let t = 1_600_000_000 + i64::from(*serial);
        let entry = match kind {
            0 | 1 => (Entry::file(&path, 0o644).mtime(t, 0), format!("data {serial}").into_bytes()),
            2 => (Entry::dir(&path, [0o755, 0o700, 0o1777][rng.below(3)]).mtime(t, 0), Vec::new()),
            3 => (Entry::symlink(&path, "target").mtime(t, 0), Vec::new()),
            4 | 5 => (Entry::whiteout(&path).mtime(t, 0), Vec::new()),
            _ => (Entry::opaque(&path).mtime(t, 0), Vec::new()),
        };
        entries.push(entry);
    }
    let pairs: Vec<(Entry, &[u8])> = entries.iter().map(|(en, d)| (en.clone(), d.as_slice())).collect();
    let described = entries.iter().map(|(en, _)| format!("{} {:?}", en.display_path(), en.kind)).collect::<Vec<_>>();
    (rooted(&pairs), described.join(", "))
}

#[test]
fn privileged_random_stacks_flat_equals_kernel_merged_view() {
    if !require_privileged("privileged_random_stacks_flat_equals_kernel_merged_view") {
        return;
    }
    let stacks: usize = std::env::var("STRATA_FLAT_DIFF_STACKS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let seed: u64 = std::env::var("STRATA_FLAT_DIFF_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let (mut compared, mut refused, mut phantom, mut entries) = (0, 0, 0, 0);
    for n in 0..stacks {
        let stack_seed = seed.wrapping_mul(1_000_003).wrapping_add(n as u64) | 1;
        let mut rng = Rng(stack_seed);
        let mut serial = 0;
        let (layers, described): (Vec<Vec<u8>>, Vec<String>) =
            (0..2 + rng.below(3)).map(|_| random_layer(&mut rng, &mut serial)).unzip();
        match flat_and_merged(&layers, false) {
            Err(err) if err.contains(KERNEL_PHANTOM) => phantom += 1,
            // Shapes the engine refuses (e.g. an entry below this layer's own file).
            Err(err) => {
                eprintln!("flat_diff: refused: {err}");
                refused += 1;
            }
            Ok((flat, merged)) => {
                let diff = flat.diff(&merged);
                assert!(
                    diff.is_empty(),
                    "stack {n} (seed {stack_seed}): flat differs from the kernel:\n{}\nlayers:\n{}",
                    diff.join("\n"),
                    described.join("\n")
                );
                compared += 1;
                entries += flat.paths().len();
            }
        }
    }
    eprintln!(
        "flat_diff: {compared} stacks compared ({entries} entries), {refused} refused by the engine, \
         {phantom} skipped ({KERNEL_PHANTOM})"
    );
    assert!(compared * 2 >= stacks, "only {compared} of {stacks} random stacks applied; the generator is off");
}
