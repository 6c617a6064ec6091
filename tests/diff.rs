//! diff: an upper dir written back as a layer gives back exactly the tree the mount
//! showed. Changes are made through real mounts (kernel overlayfs; strata-fuse; and
//! strata-fuse on a filesystem without xattrs, which writes the tar form's markers),
//! the upper dir is diffed, and the layer applied flat on a copy of the lower layer must
//! equal the merged view entry by entry.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use strata::core::diff::{ChangeKind, DiffOptions, changes, write_tar};
use strata::core::ovl::XattrNamespace;

use crate::util::{MountGuard, Tree, apply_flat, require_fuse, require_privileged, run};

/// The lower layer: something for every kind of change.
pub(crate) fn lower(dir: &Path) {
    for (path, body) in [
        ("etc/conf", "a=1\n"),
        ("etc/keep", "keep\n"),
        ("etc/gone", "gone\n"),
        ("usr/bin/tool", "#!/bin/sh\n"),
        ("data/dir/a", "a"),
        ("data/dir/b", "b"),
        ("swap/inner", "i"),
        ("swapf", "file that becomes a dir"),
        ("hl", "linked"),
        ("old", "renamed"),
    ] {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, body).expect("write");
    }
    fs::set_permissions(dir.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The changes, made through the mount `m`.
pub(crate) fn change(m: &Path, xattrs: bool) {
    fs::create_dir_all(m.join("new/sub")).expect("mkdir");
    fs::write(m.join("new/sub/x"), "new").expect("add");
    fs::OpenOptions::new()
        .append(true)
        .open(m.join("etc/conf"))
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(b"b=2\n")
        })
        .expect("modify");
    fs::set_permissions(m.join("usr/bin/tool"), fs::Permissions::from_mode(0o700)).expect("chmod");
    rustix::fs::chown(m.join("etc/keep"), Some(rustix::fs::Uid::from_raw(1234)), Some(rustix::fs::Gid::from_raw(5678)))
        .expect("chown");
    if xattrs {
        rustix::fs::setxattr(m.join("etc/keep"), "user.added", b"v", rustix::fs::XattrFlags::empty()).expect("xattr");
    }
    fs::remove_file(m.join("etc/gone")).expect("rm");
    fs::remove_dir_all(m.join("data/dir")).expect("rm -rf");
    fs::create_dir(m.join("data/dir")).expect("recreate");
    fs::write(m.join("data/dir/c"), "c").expect("file in the recreated dir");
    fs::remove_dir_all(m.join("swap")).expect("rm dir");
    fs::write(m.join("swap"), "now a file").expect("dir -> file");
    fs::remove_file(m.join("swapf")).expect("rm file");
    fs::create_dir(m.join("swapf")).expect("file -> dir");
    fs::write(m.join("swapf/inner"), "inner").expect("file in it");
    fs::rename(m.join("old"), m.join("renamed")).expect("rename");
    fs::hard_link(m.join("hl"), m.join("hl2")).expect("hardlink");
    std::os::unix::fs::symlink("etc/conf", m.join("sym")).expect("symlink");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        m.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .expect("fifo");
    let sparse = fs::File::create(m.join("sparse")).expect("sparse");
    sparse.set_len(8 << 20).expect("truncate");
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"x", 4 << 20).expect("write in the middle");
}

/// The tree without its root (whose times a diff does not carry) and without `links`
/// on the merged side's copied-up files (see the caller).
pub(crate) fn tree(root: &Path) -> Tree {
    let mut t = Tree::of(root);
    t.0.remove("");
    t
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["lower", "mnt", "base"] {
            fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        lower(&dir.path().join("lower"));
        Case { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A strata-fuse config over the lower layer, with `upper` and `work` made in `dir`.
    fn fuse_config(&self, dir: &Path) -> strata::fuse::UnionConfig {
        for sub in ["upper", "work"] {
            fs::create_dir(dir.join(sub)).expect("mkdir");
        }
        let mut config = strata::fuse::UnionConfig::new(vec![self.path("lower")]);
        config.stack.upper = Some(dir.join("upper"));
        config.stack.work = Some(dir.join("work"));
        config
    }

    /// Diffs `upper`, applies the layer flat on a copy of the lower layer, and compares
    /// with the merged view `view`; checks the change list too.
    fn check(&self, upper: &Path, xattrs: XattrNamespace, view: &Tree) {
        let options = DiffOptions { xattrs, ..DiffOptions::default() };
        let mut layer = Vec::new();
        let report = write_tar(upper, &options, &mut layer).expect("diff");
        assert!(report.whiteouts >= 2 && report.opaque_dirs >= 1 && report.hardlinks == 1, "{report:?}");
        run(Command::new("cp").arg("-a").arg(self.path("lower/.")).arg(self.path("base")));
        apply_flat(&layer, &self.path("base")).expect("apply the diff");
        let applied = tree(&self.path("base"));
        let diff = view.diff(&applied);
        assert!(diff.is_empty(), "merged view vs lower + diff:\n{}", diff.join("\n"));
        // Same bytes again: the layer is reproducible.
        let mut again = Vec::new();
        write_tar(upper, &options, &mut again).expect("diff again");
        assert!(layer == again, "two diffs of one upper dir differ");

        let listed = changes(upper, &[self.path("lower")], &options).expect("changes");
        let has = |kind: ChangeKind, path: &str| listed.iter().any(|c| c.kind == kind && c.path == Path::new(path));
        assert!(has(ChangeKind::Added, "new/sub/x") && has(ChangeKind::Added, "renamed"), "{listed:?}");
        assert!(has(ChangeKind::Changed, "etc/conf") && has(ChangeKind::Changed, "etc"), "{listed:?}");
        assert!(has(ChangeKind::Deleted, "etc/gone") && has(ChangeKind::Deleted, "old"), "{listed:?}");
    }
}

#[test]
fn privileged_diff_of_a_kernel_overlay_upper_gives_back_the_merged_view() {
    if !require_privileged("privileged_diff_of_a_kernel_overlay_upper_gives_back_the_merged_view") {
        return;
    }
    let c = Case::new();
    for sub in ["upper", "work"] {
        fs::create_dir(c.path(sub)).expect("mkdir");
    }
    let opts = format!(
        "index=off,lowerdir={},upperdir={},workdir={}",
        c.path("lower").display(),
        c.path("upper").display(),
        c.path("work").display()
    );
    let guard = MountGuard(c.path("mnt"));
    run(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(c.path("mnt")));
    change(&c.path("mnt"), true);
    let view = tree(&c.path("mnt"));
    run(Command::new("umount").arg(c.path("mnt")));
    drop(guard);
    c.check(&c.path("upper"), XattrNamespace::Trusted, &view);
}

#[test]
fn privileged_diff_of_a_strata_fuse_upper_gives_back_the_merged_view() {
    if !require_fuse("privileged_diff_of_a_strata_fuse_upper_gives_back_the_merged_view") {
        return;
    }
    let c = Case::new();
    let config = c.fuse_config(&c.path(""));
    let guard = MountGuard(c.path("mnt"));
    let mounted = strata::fuse::mount(&config, &c.path("mnt")).expect("mount");
    change(&c.path("mnt"), true);
    let view = tree(&c.path("mnt"));
    mounted.unmount().expect("unmount");
    drop(guard);
    c.check(&c.path("upper"), config.stack.xattrs, &view);
}

#[test]
fn privileged_diff_reads_the_tar_form_markers_of_an_upper_without_xattrs() {
    if !require_fuse("privileged_diff_reads_the_tar_form_markers_of_an_upper_without_xattrs") {
        return;
    }
    let c = Case::new();
    let ram = c.path("ram");
    fs::create_dir(&ram).expect("mkdir");
    let _ram_guard = MountGuard(ram.clone());
    run(Command::new("mount").args(["-t", "ramfs", "ramfs"]).arg(&ram));
    let mut config = c.fuse_config(&ram);
    config.aufs_whiteouts = true;
    let guard = MountGuard(c.path("mnt"));
    let mounted = strata::fuse::mount(&config, &c.path("mnt")).expect("mount");
    change(&c.path("mnt"), false);
    let view = tree(&c.path("mnt"));
    mounted.unmount().expect("unmount");
    drop(guard);
    assert!(ram.join("upper/etc/.wh.gone").exists(), "the upper dir holds tar-form whiteouts");
    c.check(&ram.join("upper"), config.stack.xattrs, &view);
}

/// A directory moved with redirect_dir=on (strata-fuse writes `*.overlay.redirect`)
/// keeps its lower contents at its old path; the layer carries it whole.
#[test]
fn privileged_diff_writes_out_directories_moved_with_redirects() {
    if !require_fuse("privileged_diff_writes_out_directories_moved_with_redirects") {
        return;
    }
    let c = Case::new();
    let mut config = c.fuse_config(&c.path(""));
    config.redirect_dir = strata::fuse::RedirectDir::On;
    let guard = MountGuard(c.path("mnt"));
    let mounted = strata::fuse::mount(&config, &c.path("mnt")).expect("mount");
    let m = c.path("mnt");
    fs::create_dir(m.join("moved")).expect("mkdir");
    fs::rename(m.join("data"), m.join("moved/data2")).expect("move a lower dir");
    fs::remove_file(m.join("moved/data2/dir/a")).expect("rm below the move");
    fs::write(m.join("moved/data2/dir/new"), "new").expect("add below the move");
    fs::rename(m.join("usr/bin"), m.join("bin2")).expect("move another");
    fs::create_dir(m.join("data")).expect("a new dir at the old name");
    let view = tree(&m);
    mounted.unmount().expect("unmount");
    drop(guard);
    let options = DiffOptions { xattrs: config.stack.xattrs, ..DiffOptions::default() };
    let mut layer = Vec::new();
    let refused = write_tar(&c.path("upper"), &options, &mut layer).expect_err("needs the lower layers");
    assert!(refused.to_string().contains("redirect"), "{refused}");
    let options = DiffOptions { lowers: vec![c.path("lower")], ..options };
    let mut layer = Vec::new();
    write_tar(&c.path("upper"), &options, &mut layer).expect("diff with the lower layers");
    run(Command::new("cp").arg("-a").arg(c.path("lower/.")).arg(c.path("base")));
    apply_flat(&layer, &c.path("base")).expect("apply");
    let applied = tree(&c.path("base"));
    let diff = view.diff(&applied);
    assert!(diff.is_empty(), "merged view vs lower + diff:\n{}", diff.join("\n"));
}
