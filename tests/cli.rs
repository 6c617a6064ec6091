//! The `strata` binary: exit codes, messages, JSON, stdin, the shipped demo layer.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use strata::core::tar::Entry;

use crate::util::{e, gzip, layer};

fn strata(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strata");
    if let Some(bytes) = stdin {
        child.stdin.take().expect("stdin").write_all(bytes).expect("feed stdin");
    }
    child.wait_with_output().expect("wait for strata")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn apply_prints_a_summary_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("layer.tar.gz");
    std::fs::write(&path, gzip(&layer(&[(Entry::file("hello", 0o644), b"hi")]))).expect("write layer");
    let target = dir.path().join("rootfs");
    let out = strata(&["apply", path.to_str().expect("utf-8"), target.to_str().expect("utf-8")], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("applied ") && stdout.contains("(gzip)") && stdout.contains("diff_id sha256:"),
        "{stdout}"
    );
    assert_eq!(std::fs::read(target.join("hello")).expect("read"), b"hi");
}

#[test]
fn apply_reads_stdin_and_prints_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tar = layer(&[e(Entry::dir("d", 0o755)), e(Entry::whiteout("d/x"))]);
    let target = dir.path().join("layer");
    let out = strata(&["apply", "--mode", "overlay", "--json", "-", target.to_str().expect("utf-8")], Some(&tar));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(json["mode"], "overlay");
    assert_eq!(json["whiteouts"], 1);
    assert_eq!(json["compression"], "plain");
    assert_eq!(json["diff_id"], strata::core::Digest::of(&tar).to_string());
}

#[test]
fn rejected_layer_exits_1_naming_the_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tar = layer(&[(Entry::file("ok", 0o644), b"x"), (Entry::file("../escape", 0o644), b"x")]);
    let out = strata(&["apply", "-", dir.path().join("t").to_str().expect("utf-8")], Some(&tar));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("entry #1 \"../escape\": path contains '..'"), "{stderr}");
    assert!(stderr.starts_with("strata: error: applying layer -"), "{stderr}");
}

#[test]
fn wrong_diff_id_exits_1_and_says_which() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let out =
        strata(&["apply", "--diff-id", &wrong, "-", dir.path().join("t").to_str().expect("utf-8")], Some(&layer(&[])));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("diff_id mismatch: expected sha256:000"), "{}", text(&out.stderr));
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["apply"][..],
        &["apply", "--mode", "sideways", "a", "b"],
        &["apply", "--diff-id", "md5:x", "a", "b"],
        &["frobnicate"],
    ] {
        let out = strata(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn help_teaches_the_modes() {
    let out = strata(&["apply", "--help"], None);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in ["--mode", "flat", "overlay", "--parent", "--userxattr", "--diff-id", "Examples:"] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
}

#[test]
fn shipped_demo_layer_is_what_the_generator_writes_and_applies() {
    #[path = "../examples/make_demo_layer.rs"]
    mod demo;
    let shipped = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/demo/demo-layer.tar.gz")).expect("demo layer");
    assert_eq!(shipped, demo::demo_layer().expect("generate"), "run `cargo run --example make_demo_layer` and commit");
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("demo");
    let out = strata(
        &["apply", concat!(env!("CARGO_MANIFEST_DIR"), "/demo/demo-layer.tar.gz"), target.to_str().expect("utf-8")],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(target.join("etc/motd")).expect("motd").contains("strata"));
}

#[test]
fn shipped_demo_image_is_what_the_generator_writes() {
    #[path = "../examples/make_demo_image.rs"]
    mod demo;
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/demo/image"));
    let generated = tempfile::tempdir().expect("tempdir");
    demo::write_demo_image(generated.path()).expect("generate");
    let files = |dir: &std::path::Path| -> Vec<(String, Vec<u8>)> {
        walkdir::WalkDir::new(dir)
            .sort_by_file_name()
            .into_iter()
            .map(|e| e.expect("walk"))
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let rel = e.path().strip_prefix(dir).expect("under dir").display().to_string();
                (rel, std::fs::read(e.path()).expect("read"))
            })
            .collect()
    };
    assert!(
        files(generated.path()) == files(root),
        "demo/image differs from the generator's output: run `cargo run --example make_demo_image` and commit"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out =
        strata(&["unpack", root.to_str().expect("utf-8"), "--to", dir.path().join("r").to_str().expect("utf-8")], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!dir.path().join("r/etc/motd").exists(), "layer 2 whites out etc/motd");
}
