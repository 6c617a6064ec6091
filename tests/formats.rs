//! Stream formats: compression sniffing, multi-member gzip and multi-frame zstd, digests,
//! GNU and PAX long names, old-GNU sparse files.

use std::os::unix::fs::MetadataExt;

use strata::core::tar::{Builder, Entry};
use strata::core::{ApplyBuilder, Compression, Digest, Error, Mode};
use strata_testkit::hostile::{HeaderFields, gnu_long_header, set_checksum};

use crate::util::{apply_flat, e, gzip, layer, zstd};

fn sample() -> Vec<u8> {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut tar = Builder::new(Vec::new());
    tar.append(&Entry::dir("etc", 0o755), b"").expect("vec");
    tar.append(&Entry::file("etc/big", 0o644), &big).expect("vec");
    tar.append(&Entry::file("etc/small", 0o644), b"small").expect("vec");
    tar.finish().expect("vec")
}

#[test]
fn plain_gzip_and_zstd_are_sniffed_and_hashed() {
    let tar = sample();
    for (bytes, compression) in
        [(tar.clone(), Compression::None), (gzip(&tar), Compression::Gzip), (zstd(&tar), Compression::Zstd)]
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = apply_flat(&bytes, dir.path()).expect("apply");
        assert_eq!(r.compression, compression);
        assert_eq!(r.diff_id, Digest::of(&tar), "diff_id is the hash of the whole uncompressed stream");
        assert_eq!(r.digest, Digest::of(&bytes), "digest is the hash of the input bytes");
        assert_eq!((r.uncompressed_bytes, r.compressed_bytes), (tar.len() as u64, bytes.len() as u64));
        assert_eq!(std::fs::read(dir.path().join("etc/big")).expect("read").len(), 300_000);
        assert_eq!(r.bytes, 300_005);
    }
}

#[test]
fn bytes_after_the_end_marker_are_ignored_but_hashed() {
    let tar = [sample(), b"appended by some writer".to_vec(), vec![0u8; 1000]].concat();
    for (bytes, padded) in [(tar.clone(), tar.clone()), (gzip(&tar), [gzip(&tar), vec![0u8; 512]].concat())] {
        for input in [bytes, padded] {
            let dir = tempfile::tempdir().expect("tempdir");
            let r = apply_flat(&input, dir.path()).expect("apply");
            assert_eq!(r.diff_id, Digest::of(&tar), "the diff_id covers the bytes after the marker");
            assert_eq!(r.digest, Digest::of(&input), "the digest covers gzip's zero padding");
            assert_eq!(std::fs::read(dir.path().join("etc/small")).expect("read"), b"small");
        }
    }
}

#[test]
fn multi_member_gzip_and_multi_frame_zstd() {
    let tar = sample();
    let (a, b) = tar.split_at(77_777);
    for bytes in [[gzip(a), gzip(b)].concat(), [zstd(a), zstd(b)].concat()] {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = apply_flat(&bytes, dir.path()).expect("apply");
        assert_eq!(r.diff_id, Digest::of(&tar));
        assert_eq!(std::fs::read(dir.path().join("etc/small")).expect("read"), b"small");
    }
}

#[test]
fn expected_digests_are_checked() {
    let tar = sample();
    let gz = gzip(&tar);
    let dir = tempfile::tempdir().expect("tempdir");
    ApplyBuilder::new(Mode::Flat)
        .expect_diff_id(Digest::of(&tar))
        .expect_digest(Digest::of(&gz))
        .build()
        .expect("options")
        .apply(&gz[..], dir.path())
        .expect("matching digests");

    let wrong = Digest::of(b"something else");
    for (builder, which) in [
        (ApplyBuilder::new(Mode::Flat).expect_diff_id(wrong.clone()), "diff_id"),
        (ApplyBuilder::new(Mode::Flat).expect_digest(wrong.clone()), "digest"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = builder.build().expect("options").apply(&gz[..], dir.path()).expect_err("mismatch");
        assert!(matches!(&err, Error::DigestMismatch { which: w, .. } if *w == which), "{err}");
        assert!(err.to_string().starts_with(&format!("{which} mismatch: expected {wrong}")), "{err}");
    }
}

#[test]
fn gnu_long_names_and_links() {
    let name = format!("{}/{}", "n".repeat(150), "m".repeat(120));
    let target = format!("{}/{}", "t".repeat(150), "u".repeat(120));
    let mut bytes = layer(&[(Entry::file(&target, 0o644), b"long target")]);
    bytes.truncate(bytes.len() - 1024);
    bytes.extend(gnu_long_header(b'L', name.as_bytes()));
    bytes.extend(gnu_long_header(b'K', target.as_bytes()));
    let block = HeaderFields {
        typeflag: b'1',
        name: &name.as_bytes()[..100],
        link: &target.as_bytes()[..100],
        mode: 0o644,
        ..Default::default()
    }
    .block();
    bytes.extend(block);
    bytes.extend([0u8; 1024]);
    let dir = tempfile::tempdir().expect("tempdir");
    apply_flat(&bytes, dir.path()).expect("apply");
    let a = std::fs::metadata(dir.path().join(&name)).expect("link");
    let b = std::fs::metadata(dir.path().join(&target)).expect("target");
    assert_eq!(a.ino(), b.ino());
}

/// An old-GNU sparse entry (`S`) with `regions` as (offset, byte) of 4 KiB each.
fn gnu_sparse(name: &str, real_size: u64, regions: &[(u64, u8)]) -> Vec<u8> {
    let data: Vec<u8> = regions.iter().flat_map(|&(_, byte)| vec![byte; 4096]).collect();
    let mut block = HeaderFields {
        typeflag: b'S',
        name: name.as_bytes(),
        size: data.len() as u64,
        mode: 0o644,
        ..Default::default()
    }
    .block();
    block[257..265].copy_from_slice(b"ustar  \0");
    block[345..500].fill(0);
    let slot = |buf: &mut [u8], offset: u64| {
        strata_testkit::hostile::octal(&mut buf[..12], offset);
        strata_testkit::hostile::octal(&mut buf[12..24], 4096);
    };
    let (head, rest) = regions.split_at(regions.len().min(4));
    for (i, &(offset, _)) in head.iter().enumerate() {
        slot(&mut block[386 + i * 24..386 + i * 24 + 24], offset);
    }
    strata_testkit::hostile::octal(&mut block[483..495], real_size);
    let mut ext = [0u8; 512];
    if !rest.is_empty() {
        block[482] = 1;
        for (i, &(offset, _)) in rest.iter().enumerate() {
            slot(&mut ext[i * 24..i * 24 + 24], offset);
        }
    }
    set_checksum(&mut block);
    let mut out = block.to_vec();
    if !rest.is_empty() {
        out.extend(ext);
    }
    out.extend(&data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

#[test]
fn old_gnu_sparse_files_keep_their_holes() {
    const MIB: u64 = 1 << 20;
    let regions = [(0, b'A'), (MIB, b'B'), (2 * MIB, b'C'), (3 * MIB, b'D'), (4 * MIB, b'E'), (6 * MIB, b'F')];
    let mut bytes = gnu_sparse("sparse", 8 * MIB, &regions);
    bytes.extend([0u8; 1024]);
    let dir = tempfile::tempdir().expect("tempdir");
    let r = apply_flat(&bytes, dir.path()).expect("apply");
    let path = dir.path().join("sparse");
    let data = std::fs::read(&path).expect("read");
    assert_eq!(data.len() as u64, 8 * MIB);
    for &(offset, byte) in &regions {
        let o = offset as usize;
        assert!(data[o..o + 4096].iter().all(|&b| b == byte), "region at {offset}");
        assert!(data[o + 4096..o + 8192].iter().all(|&b| b == 0), "hole after {offset}");
    }
    let allocated = std::fs::metadata(&path).expect("stat").blocks() * 512;
    assert!(allocated < MIB, "holes must stay holes: {allocated} bytes allocated");
    assert_eq!(r.bytes, 6 * 4096);
}

#[test]
fn pax_sparse_is_refused_clearly() {
    let records = strata::core::tar::pax::format_record("GNU.sparse.major", b"1");
    let mut bytes = strata_testkit::hostile::pax_header(b"f", &records);
    bytes.extend(layer(&[e(Entry::file("f", 0o644))]));
    let dir = tempfile::tempdir().expect("tempdir");
    let err = apply_flat(&bytes, dir.path()).expect_err("refused").to_string();
    assert!(err.contains("PAX sparse files (GNU.sparse.major) are not supported"), "{err}");
}

#[test]
fn end_of_stream_without_end_marker_is_accepted_like_go() {
    let mut bytes = layer(&[(Entry::file("f", 0o644), b"x")]);
    bytes.truncate(bytes.len() - 1024);
    let dir = tempfile::tempdir().expect("tempdir");
    apply_flat(&bytes, dir.path()).expect("apply");
    assert!(dir.path().join("f").exists());
}
