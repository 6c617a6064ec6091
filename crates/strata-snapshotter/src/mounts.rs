//! What a snapshot's mounts look like to containerd, which performs them itself:
//! the plan is strata-overlay's (one definition: a bind for a lone layer or an active
//! snapshot without parents, else overlayfs with `index=off`, `userxattr` for layers
//! marked in `user.overlay.*`), written in containerd's option conventions.
//!
//! With [`Driver::Fuse`] a union is handed out as type `fuse3.strata-fuse`: containerd
//! (1.6+) performs `fuse3.*` mounts by running `mount.fuse3 SOURCE TARGET -o OPTS -t
//! strata-fuse`, which runs the `strata-fuse` binary (it takes fuse-overlayfs's
//! command line). The host needs `mount.fuse3` (Debian: fuse3) and `strata-fuse` on
//! containerd's `PATH`; unmounting the union ends the daemon.

use std::path::Path;

use strata_overlay::{MountPlan, OverlayOptions};
use strata_store::{MountSpec, Store};
use tonic::Status;

use crate::Driver;
use crate::proto::containerd::types::Mount;

/// The mount type containerd runs `mount.fuse3 ... -t strata-fuse` for.
pub const FUSE_TYPE: &str = "fuse3.strata-fuse";

/// The mounts of snapshot `key` (its spec `spec`): its own dir is looked up only for a
/// view of nothing.
pub(crate) fn of_snapshot(store: &Store, key: &str, spec: &MountSpec, driver: Driver) -> Result<Vec<Mount>, Status> {
    if spec.read_only && spec.lowers.is_empty() {
        let own = store.snapshot_dir(key).map_err(|e| crate::status::from_store(&e))?;
        return Ok(vec![bind(&own, true)]);
    }
    // Anything else never binds its own dir: the key only names the plan in errors.
    for_spec(spec, Path::new(key), driver)
}

/// The mounts for `spec`; `own_dir` is bound read-only for a view of nothing (a view
/// with no parent: containerd's overlay snapshotter binds an empty dir the same way).
pub(crate) fn for_spec(spec: &MountSpec, own_dir: &Path, driver: Driver) -> Result<Vec<Mount>, Status> {
    if spec.read_only && spec.lowers.is_empty() {
        return Ok(vec![bind(own_dir, true)]);
    }
    let plan = MountPlan::new(spec, &OverlayOptions::default(), own_dir)
        .map_err(|e| Status::failed_precondition(crate::status::error_chain(&e)))?;
    Ok(vec![match &plan {
        MountPlan::Bind { source, read_only } => bind(source, *read_only),
        MountPlan::Overlay { lowers, upper, options } => {
            let mut out: Vec<String> = options
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                })
                .collect();
            if let Some((upper, work)) = upper {
                out.push(format!("workdir={}", work.display()));
                out.push(format!("upperdir={}", upper.display()));
            }
            let lowers: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
            out.push(format!("lowerdir={}", lowers.join(":")));
            let (kind, source) = match driver {
                Driver::Overlay => ("overlay", "overlay"),
                // strata-fuse names its mounts by source in /proc/mounts.
                Driver::Fuse => (FUSE_TYPE, "strata"),
            };
            Mount { r#type: kind.into(), source: source.into(), target: String::new(), options: out }
        }
    }])
}

fn bind(source: &Path, read_only: bool) -> Mount {
    Mount {
        r#type: "bind".into(),
        source: source.display().to_string(),
        target: String::new(),
        options: vec![if read_only { "ro" } else { "rw" }.into(), "rbind".into()],
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use strata_core::ovl::XattrNamespace;

    use super::*;

    fn spec(lowers: &[&str], upper: bool) -> MountSpec {
        MountSpec {
            lowers: lowers.iter().map(PathBuf::from).collect(),
            upper: upper.then(|| PathBuf::from("/s/9/fs")),
            work: upper.then(|| PathBuf::from("/s/9/work")),
            read_only: !upper,
            xattrs: XattrNamespace::Trusted,
        }
    }

    #[test]
    fn mounts_follow_containerd_s_overlay_snapshotter() {
        let own = Path::new("/s/9/fs");
        let active = for_spec(&spec(&["/s/2/fs", "/s/1/fs"], true), own, Driver::Overlay).expect("plan");
        assert_eq!(active[0].r#type, "overlay");
        assert_eq!(
            active[0].options,
            ["index=off", "workdir=/s/9/work", "upperdir=/s/9/fs", "lowerdir=/s/2/fs:/s/1/fs"]
        );
        let first = for_spec(&spec(&[], true), own, Driver::Overlay).expect("plan");
        assert_eq!(
            (first[0].r#type.as_str(), first[0].options.as_slice()),
            ("bind", &["rw".into(), "rbind".into()][..])
        );
        let view = for_spec(&spec(&["/s/1/fs"], false), own, Driver::Fuse).expect("plan");
        assert_eq!((view[0].source.as_str(), view[0].options[0].as_str()), ("/s/1/fs", "ro"));
        let fuse = for_spec(&spec(&["/s/2/fs", "/s/1/fs"], false), own, Driver::Fuse).expect("plan");
        assert_eq!(
            (fuse[0].r#type.as_str(), fuse[0].options.as_slice()),
            (FUSE_TYPE, &["index=off".to_owned(), "lowerdir=/s/2/fs:/s/1/fs".to_owned()][..])
        );
        let empty = for_spec(&spec(&[], false), own, Driver::Fuse).expect("plan");
        assert_eq!((empty[0].source.as_str(), empty[0].options[0].as_str()), ("/s/9/fs", "ro"));
    }
}
