//! Whatever the bytes, the engine never panics and never writes outside its target:
//! a rich layer is mutated thousands of ways (bit flips, truncations, insertions,
//! header-field garbage), deterministically from a seed, and applied in both forms.

use strata::core::tar::Entry;
use strata::core::{ApplyBuilder, Mode};

use crate::util::{Rng, Sandbox, e, gzip, layer};

fn rich_layer() -> Vec<u8> {
    layer(&[
        e(Entry::dir("./", 0o755)),
        e(Entry::dir("etc", 0o755).xattr("user.k", b"v\n=")),
        (Entry::file("etc/passwd", 0o644), b"root:x:0:0::/root:/bin/sh\n"),
        (Entry::file(&format!("deep/{}/{}", "a".repeat(120), "b".repeat(90)), 0o600).owner(70_000, 70_000), b"long"),
        e(Entry::symlink("etc/link", "../etc/passwd")),
        e(Entry::hardlink("etc/hard", "etc/passwd")),
        e(Entry::whiteout("etc/gone")),
        e(Entry::opaque("var")),
        e(Entry::char_device("dev/null", 1, 3)),
        e(Entry::fifo("run/fifo")),
        (Entry::file("big", 0o755).mtime(1_700_000_000, 5), &[7u8; 5000]),
    ])
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.truncate(rng.below(out.len())),
            2 => {
                let i = rng.below(out.len());
                let junk: Vec<u8> = (0..1 + rng.below(600)).map(|_| rng.below(256) as u8).collect();
                out.splice(i..i, junk);
            }
            3 => {
                // Garbage in a header's numeric fields (size, mode, uid, mtime, checksum).
                let block = rng.below(out.len() / 512 + 1) * 512;
                let field = [100, 108, 116, 124, 136, 148, 329, 337][rng.below(8)];
                for k in 0..8 {
                    if let Some(b) = out.get_mut(block + field + k) {
                        *b = [b'7', 0xff, 0x80, b' ', 0, b'9'][rng.below(6)];
                    }
                }
            }
            _ => {
                let i = rng.below(out.len());
                let len = rng.below(64).min(out.len() - i);
                out.drain(i..i + len);
            }
        }
        if out.is_empty() {
            break;
        }
    }
    out
}

#[test]
fn mutated_layers_never_panic_nor_escape() {
    let plain = rich_layer();
    let compressed = gzip(&plain);
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut applied = 0;
    for round in 0..600 {
        let base = if round % 3 == 0 { &compressed } else { &plain };
        let bytes = mutate(&mut rng, base);
        let mode = if round % 2 == 0 { Mode::Flat } else { Mode::Overlay };
        let sandbox = Sandbox::new();
        let before = sandbox.outside();
        let target = sandbox.target().join("t");
        let result =
            std::panic::catch_unwind(|| ApplyBuilder::new(mode).build().expect("options").apply(&bytes[..], &target));
        match result {
            Err(_) => panic!("round {round}: apply panicked on a mutated layer ({} bytes)", bytes.len()),
            Ok(Err(err)) => assert!(!err.to_string().contains("panicked"), "round {round}: {err}"),
            Ok(Ok(_)) => applied += 1,
        }
        let diff = before.diff(&sandbox.outside());
        assert!(diff.is_empty(), "round {round}: outside changed:\n{}", diff.join("\n"));
    }
    // The mutations must exercise both outcomes, or the test proves little.
    assert!(applied > 20 && applied < 580, "{applied} of 600 mutated layers applied");
}
