//! `strata bench` runs end to end on a tiny workload (a smoke test of the command; the
//! numbers are not asserted: timing belongs in benchmarks, never in tests).

use std::process::Command;

#[test]
fn bench_unpack_smoke() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("chart.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["bench", "unpack", "--size", "2", "--runs", "1", "--json", "--dir"])
        .arg(dir.path())
        .arg("--svg")
        .arg(&svg)
        .output()
        .expect("run strata bench");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let results = report["results"].as_array().expect("results");
    let names: Vec<&str> = results.iter().filter_map(|r| r["tool"].as_str()).collect();
    for want in ["strata unpack --to (gzip)", "strata unpack --to (zstd)", "limit: tar -xf of decompressed tars"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for r in results {
        assert_eq!(r["seconds"].as_array().map(Vec::len), Some(1), "{r}");
        assert!(r["median_seconds"].as_f64().is_some_and(|s| s > 0.0), "{r}");
    }
    assert_eq!(report["workload"]["layers"], 3);
    for s in report["skipped"].as_array().expect("skipped") {
        assert!(s["why"].as_str().is_some_and(|w| !w.is_empty()), "a skipped peer says why: {s}");
    }
    assert!(std::fs::read_to_string(&svg).expect("chart").starts_with("<svg"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("chart.svg")], "the bench cleans up its workload");
}

#[test]
fn privileged_bench_mount_smoke() {
    if !crate::util::require_fuse("privileged_bench_mount_smoke") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["bench", "mount", "--size", "4", "--runs", "1", "--json", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run strata bench mount");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let names: Vec<&str> =
        report["results"].as_array().expect("results").iter().filter_map(|r| r["tool"].as_str()).collect();
    let ops = [
        "read, cold cache",
        "read, warm cache",
        "copy-up (append 1 byte)",
        "find",
        "stat of each file",
        "untar small files",
        "untar small files + sync",
        "rm -rf of lower files",
        "rm -rf of files just written",
    ];
    for op in ops {
        for driver in ["strata mount (kernel overlayfs)", "strata-fuse (passthrough)", "strata-fuse (no passthrough)"] {
            assert!(names.contains(&format!("{driver}: {op}").as_str()), "{driver}: {op} missing from {names:?}");
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(dir.path().to_str().expect("utf-8")), "the bench left a mount behind");
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0, "the bench cleans up its workload");
}
