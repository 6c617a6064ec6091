//! From a store's mount spec to what to mount: pure logic, unit-tested without privilege.

use std::path::{Path, PathBuf};

use strata_core::ovl::MountSpec;
use strata_core::ovl::XattrNamespace;

use crate::error::{Error, Result};

/// The kernel's limit on overlayfs lower layers (`OVL_MAX_STACK`).
pub const MAX_LOWERS: usize = 500;

/// Options beyond containerd's defaults, each only on request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayOptions {
    /// `volatile`: no syncs to the upper dir (fast, unsafe across crashes).
    pub volatile: bool,
    /// `redirect_dir=on`: directory renames without EXDEV.
    pub redirect_dir: bool,
    /// `metacopy=on`: metadata-only copy-up.
    pub metacopy: bool,
}

/// What to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountPlan {
    /// A bind mount (zero or one layer).
    Bind {
        /// The directory to bind.
        source: PathBuf,
        /// Read-only bind.
        read_only: bool,
    },
    /// An overlayfs mount.
    Overlay {
        /// Lower dirs, top-most first.
        lowers: Vec<PathBuf>,
        /// Upper and work dirs (writable mounts).
        upper: Option<(PathBuf, PathBuf)>,
        /// `key=value` or flag options, in the order they are given to the kernel.
        options: Vec<(String, Option<String>)>,
    },
}

impl MountPlan {
    /// Plans `spec` the way containerd does: a bind mount for a single layer or for an
    /// active snapshot with no parents, else overlayfs with `index=off` (plus
    /// `userxattr` when the spec's layers keep their markers in `user.overlay.*`, other
    /// options only on request).
    ///
    /// # Errors
    /// Nothing to mount, or more than [`MAX_LOWERS`] layers.
    pub fn new(spec: &MountSpec, options: &OverlayOptions, target: &Path) -> Result<MountPlan> {
        let fail = |reason: String| Error::Plan { target: target.to_owned(), reason };
        if spec.lowers.len() > MAX_LOWERS {
            return Err(fail(format!(
                "{} layers exceed the kernel's overlayfs limit of {MAX_LOWERS}",
                spec.lowers.len()
            )));
        }
        let upper = match (&spec.upper, &spec.work, spec.read_only) {
            (Some(upper), Some(work), false) => Some((upper.clone(), work.clone())),
            (_, _, true) => None,
            _ => return Err(fail("a writable mount needs an upper and a work dir".into())),
        };
        match (spec.lowers.as_slice(), &upper) {
            ([], None) => return Err(fail("a read-only mount of nothing".into())),
            ([], Some((upper, _))) => return Ok(MountPlan::Bind { source: upper.clone(), read_only: false }),
            ([only], None) => return Ok(MountPlan::Bind { source: only.clone(), read_only: true }),
            _ => {}
        }
        let mut opts: Vec<(String, Option<String>)> = vec![("index".into(), Some("off".into()))];
        if spec.xattrs == XattrNamespace::User {
            opts.push(("userxattr".into(), None));
        }
        if options.redirect_dir {
            opts.push(("redirect_dir".into(), Some("on".into())));
        }
        if options.metacopy {
            opts.push(("metacopy".into(), Some("on".into())));
        }
        if options.volatile && upper.is_some() {
            opts.push(("volatile".into(), None));
        }
        Ok(MountPlan::Overlay { lowers: spec.lowers.clone(), upper, options: opts })
    }

    /// The legacy `mount(2)` option string (`lowerdir=a:b,upperdir=..,workdir=..,index=off`).
    ///
    /// # Errors
    /// A path holds `,` or `:`, which the option syntax cannot carry.
    pub fn legacy_options(&self, relative_to: Option<&Path>) -> std::result::Result<String, String> {
        let MountPlan::Overlay { lowers, upper, options } = self else {
            return Err("not an overlay mount".into());
        };
        let show = |p: &Path| -> std::result::Result<String, String> {
            let p = relative_to.and_then(|base| p.strip_prefix(base).ok()).unwrap_or(p);
            let s = p.to_str().ok_or_else(|| format!("{} is not UTF-8", p.display()))?;
            if s.contains([',', ':']) {
                return Err(format!("{s:?} contains ',' or ':', which mount(2) options cannot carry"));
            }
            Ok(s.to_owned())
        };
        let lowers = lowers.iter().map(|p| show(p)).collect::<std::result::Result<Vec<_>, _>>()?;
        let mut out = vec![format!("lowerdir={}", lowers.join(":"))];
        if let Some((upper, work)) = upper {
            out.push(format!("upperdir={}", show(upper)?));
            out.push(format!("workdir={}", show(work)?));
        }
        out.extend(options.iter().map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        }));
        Ok(out.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(lowers: &[&str], upper: bool, read_only: bool) -> MountSpec {
        MountSpec {
            lowers: lowers.iter().map(PathBuf::from).collect(),
            upper: upper.then(|| PathBuf::from("/s/up/fs")),
            work: upper.then(|| PathBuf::from("/s/up/work")),
            read_only,
            xattrs: XattrNamespace::Trusted,
        }
    }

    #[test]
    fn plans_like_containerd() {
        let t = Path::new("/mnt");
        let none = OverlayOptions::default();
        assert_eq!(
            MountPlan::new(&spec(&[], true, false), &none, t).expect("plan"),
            MountPlan::Bind { source: "/s/up/fs".into(), read_only: false }
        );
        assert_eq!(
            MountPlan::new(&spec(&["/s/1/fs"], false, true), &none, t).expect("plan"),
            MountPlan::Bind { source: "/s/1/fs".into(), read_only: true }
        );
        let MountPlan::Overlay { lowers, upper, options } =
            MountPlan::new(&spec(&["/s/2/fs", "/s/1/fs"], true, false), &none, t).expect("plan")
        else {
            panic!("expected overlay");
        };
        assert_eq!(lowers, [PathBuf::from("/s/2/fs"), PathBuf::from("/s/1/fs")], "top-most first, as given");
        assert!(upper.is_some());
        assert_eq!(options, [("index".to_owned(), Some("off".to_owned()))], "only index=off by default");
        let user = MountSpec { xattrs: XattrNamespace::User, ..spec(&["/a", "/b"], false, true) };
        let rootless = MountPlan::new(&user, &none, t).expect("plan");
        assert!(
            matches!(&rootless, MountPlan::Overlay { options, .. } if options.iter().any(|(k, _)| k == "userxattr"))
        );
        let all = OverlayOptions { volatile: true, redirect_dir: true, metacopy: true };
        let plan = MountPlan::new(&spec(&["/a", "/b"], true, false), &all, t).expect("plan");
        assert_eq!(
            plan.legacy_options(None).expect("options"),
            "lowerdir=/a:/b,upperdir=/s/up/fs,workdir=/s/up/work,index=off,redirect_dir=on,metacopy=on,volatile"
        );
    }

    #[test]
    fn refuses_what_cannot_mount() {
        let t = Path::new("/mnt");
        let none = OverlayOptions::default();
        assert!(MountPlan::new(&spec(&[], false, true), &none, t).is_err());
        let many: Vec<String> = (0..=MAX_LOWERS).map(|i| format!("/l{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let err = MountPlan::new(&spec(&many, false, true), &none, t).expect_err("too many").to_string();
        assert!(err.contains("exceed the kernel's overlayfs limit of 500"), "{err}");
        let bad = MountPlan::new(&spec(&["/a:b", "/c"], false, true), &none, t).expect("plan");
        assert!(bad.legacy_options(None).is_err());
        let rel = MountPlan::new(&spec(&["/s/2/fs", "/s/1/fs"], false, true), &none, t).expect("plan");
        assert_eq!(rel.legacy_options(Some(Path::new("/s"))).expect("relative"), "lowerdir=2/fs:1/fs,index=off");
    }
}
