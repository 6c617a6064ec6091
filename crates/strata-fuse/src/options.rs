//! fuse-overlayfs's `-o` option language, so strata-fuse drops into a `mount_program`.

use std::path::PathBuf;

use crate::{Error, IdMap, RedirectDir, Result, UnionConfig, XattrNamespace};

/// Options fuse-overlayfs callers pass that change nothing here (said why beside each).
const ACCEPTED_AND_IGNORED: &[&str] = &[
    "rw",                  // the default
    "default_permissions", // always on
    "fsync=1",             // copy-up already fsyncs
    "fsync=0",             // a hint; copy-up stays durable
    "noacl",               // no POSIX ACL handling either way
    "index=off",           // what strata-fuse does
    "metacopy=off",        // what strata-fuse does
    "xino=off",            // inode numbers are ours
    "xino=auto",
    "static_nlink", // merged dirs already report nlink 1
    "allow_root",   // root may always
    "auto_unmount", // the daemon is managed by `strata umount` / fusermount3 -u
    "volatile",     // overlayfs: skip syncs; copy-up's one fsync is kept (a crash never shows a partial copy)
];

/// Applies a comma-separated option string (as after `-o`) to `config`.
///
/// # Errors
/// [`Error::Config`] naming the option that is unknown or unsupported.
pub fn parse_options(config: &mut UnionConfig, opts: &str) -> Result<()> {
    for opt in split_options(opts) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        match (key, value) {
            ("lowerdir", Some(v)) => config.stack.lowers = split_dirs(v)?,
            ("upperdir", Some(v)) => config.stack.upper = Some(PathBuf::from(v)),
            ("workdir", Some(v)) => config.stack.work = Some(PathBuf::from(v)),
            ("fsname", Some(v)) => config.fsname = v.to_owned(),
            ("threads", Some(v)) => {
                config.threads = v.parse().map_err(|_| Error::Config(format!("threads={v}: not a number")))?;
            }
            ("passthrough", Some("on")) => config.passthrough = true,
            ("passthrough", Some("off")) => config.passthrough = false,
            ("uring", Some("on")) => config.uring = true,
            ("uring", Some("off")) => config.uring = false,
            ("userxattr", None) => config.stack.xattrs = XattrNamespace::User,
            ("whiteouts", Some("aufs")) => config.aufs_whiteouts = true,
            ("whiteouts", Some("overlay")) => config.aufs_whiteouts = false,
            ("redirect_dir", Some("on")) => config.redirect_dir = RedirectDir::On,
            // overlayfs's `off` still follows (its default `redirect_always_follow=Y`).
            ("redirect_dir", Some("follow" | "off")) => config.redirect_dir = RedirectDir::Follow,
            ("redirect_dir", Some("nofollow")) => config.redirect_dir = RedirectDir::NoFollow,
            ("ro", None) => config.stack.read_only = true,
            ("allow_other", None) => config.allow_other = true,
            ("dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "noatime", None) => {
                let opposite = key.strip_prefix("no").map_or_else(|| format!("no{key}"), str::to_owned);
                config.flags.retain(|f| f != key && *f != opposite);
                config.flags.push(key.to_owned());
            }
            ("uidmapping", Some(v)) => config.uid_map = IdMap::parse(key, v)?,
            ("gidmapping", Some(v)) => config.gid_map = IdMap::parse(key, v)?,
            ("squash_to_root" | "squash_to_uid" | "squash_to_gid", _) => {
                return Err(Error::Config(format!(
                    "option {key}: squashing ids is not supported by strata-fuse; use uidmapping=/gidmapping="
                )));
            }
            ("subtype" | "context" | "fscontext" | "defcontext" | "rootcontext", Some(_)) => {}
            _ if ACCEPTED_AND_IGNORED.contains(&opt.as_str()) => {}
            _ => return Err(Error::Config(format!("unknown option {opt:?} (see strata-fuse --help)"))),
        }
    }
    Ok(())
}

/// Splits on commas not escaped with a backslash (`\,` keeps a comma in a path).
fn split_options(opts: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = opts.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    if next != ',' {
                        out.last_mut().expect("never empty").push('\\');
                    }
                    out.last_mut().expect("never empty").push(next);
                }
            }
            ',' => out.push(String::new()),
            c => out.last_mut().expect("never empty").push(c),
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// `A:B:C` (top-most first), with `\:` for a colon inside a path.
fn split_dirs(v: &str) -> Result<Vec<PathBuf>> {
    let mut dirs = vec![String::new()];
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => dirs.last_mut().expect("never empty").extend(chars.next()),
            ':' => dirs.push(String::new()),
            c => dirs.last_mut().expect("never empty").push(c),
        }
    }
    if dirs.iter().any(String::is_empty) {
        return Err(Error::Config(format!("lowerdir={v}: empty layer path")));
    }
    Ok(dirs.into_iter().map(PathBuf::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuse_overlayfs_option_strings_parse() {
        let mut c = UnionConfig::new(vec![]);
        // podman's mount_program line: an empty option, volatile, colon-led mappings.
        let podman =
            "lowerdir=/l/2:/l/1,upperdir=/u,workdir=/w,,volatile,uidmapping=:0:100000:65536,gidmapping=:0:100000:65536";
        parse_options(&mut c, podman).expect("podman's options parse");
        assert_eq!(c.uid_map, IdMap::parse("uidmapping", "0:100000:65536").expect("map"));
        parse_options(&mut c, "lowerdir=/l/2:/l/1,upperdir=/u,workdir=/w,fsync=0,nodev,userxattr").expect("parses");
        assert_eq!(c.stack.lowers, vec![PathBuf::from("/l/2"), PathBuf::from("/l/1")]);
        assert_eq!(c.stack.upper.as_deref(), Some(std::path::Path::new("/u")));
        assert_eq!(c.stack.work.as_deref(), Some(std::path::Path::new("/w")));
        assert!(c.flags.contains(&"nodev".to_owned()) && !c.flags.contains(&"dev".to_owned()), "{:?}", c.flags);
        assert_eq!(c.stack.xattrs, XattrNamespace::User);
    }

    #[test]
    fn escapes_keep_colons_and_commas_in_paths() {
        let mut c = UnionConfig::new(vec![]);
        parse_options(&mut c, r"lowerdir=/a\:b:/c\,d").expect("parses");
        assert_eq!(c.stack.lowers, vec![PathBuf::from("/a:b"), PathBuf::from("/c,d")]);
    }

    #[test]
    fn unknown_and_unsupported_options_are_named() {
        let mut c = UnionConfig::new(vec![]);
        let e = parse_options(&mut c, "lowerdir=/a,frobnicate").expect_err("unknown");
        assert!(e.to_string().contains("frobnicate"), "{e}");
        let e = parse_options(&mut c, "squash_to_root").expect_err("unsupported");
        assert!(e.to_string().contains("squash"), "{e}");
        let e = parse_options(&mut c, "uidmapping=0:x:1").expect_err("not an id");
        assert!(e.to_string().contains("uidmapping"), "{e}");
        assert!(parse_options(&mut c, "lowerdir=/a::/b").is_err());
    }
}
