//! Metadata rules: which xattrs a layer may set, and id checks.

/// Whether a layer may set xattr `key`. Refused: overlayfs internals (`trusted.*`, which
/// also holds `trusted.overlay.*`, and `user.overlay.*`: a smuggled opaque or redirect
/// would change what the mount shows), SELinux labels (the runtime assigns them), and the
/// rootless-container bookkeeping xattrs that fuse-overlayfs and rootlesskit read as
/// ownership (`user.containers.override_stat`, `user.rootlesscontainers`).
pub fn xattr_allowed(key: &str) -> bool {
    !(key.starts_with("trusted.")
        || crate::ovl::is_overlay_xattr(key.as_bytes())
        || key == "security.selinux"
        || key == "user.containers.override_stat"
        || key == "user.rootlesscontainers")
}

/// A uid or gid from a layer as the kernel's 32-bit id. `u32::MAX` is `(uid_t)-1`, which
/// chown reads as "leave unchanged", so it is refused with everything larger.
pub fn id32(kind: &str, id: u64) -> Result<u32, String> {
    u32::try_from(id)
        .ok()
        .filter(|&id| id != u32::MAX)
        .ok_or_else(|| format!("{kind} {id} does not fit a 32-bit id (max {})", u32::MAX - 1))
}

/// Device numbers as the kernel's `dev_t` holds them for mknod: 12-bit major, 20-bit
/// minor. Larger values would be truncated silently, possibly to 0/0 (a whiteout).
pub fn device_numbers(major: u64, minor: u64) -> Result<(u32, u32), String> {
    if major > 0xfff || minor > 0xf_ffff {
        return Err(format!("device {major}:{minor} exceeds the kernel's 12-bit major / 20-bit minor"));
    }
    Ok((major as u32, minor as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_policy() {
        for (key, allowed) in [
            ("user.foo", true),
            ("security.capability", true),
            ("security.ima", true),
            ("system.posix_acl_access", true),
            ("user.overlayfoo", true),
            ("trusted.overlay.opaque", false),
            ("trusted.overlay.redirect", false),
            ("trusted.foo", false),
            ("user.overlay.opaque", false),
            ("user.overlay.origin", false),
            ("security.selinux", false),
            ("user.containers.override_stat", false),
            ("user.rootlesscontainers", false),
        ] {
            assert_eq!(xattr_allowed(key), allowed, "{key}");
        }
    }

    #[test]
    fn ids_and_devices() {
        assert_eq!(id32("uid", 0), Ok(0));
        assert_eq!(id32("uid", 4_294_967_294), Ok(4_294_967_294));
        assert!(id32("uid", 4_294_967_295).is_err());
        assert!(id32("gid", 1 << 40).is_err());
        assert_eq!(device_numbers(4095, 0xfffff), Ok((4095, 0xfffff)));
        assert!(device_numbers(4096, 0).is_err());
        assert!(device_numbers(0, 0x100000).is_err());
        assert!(device_numbers(1 << 32, 0).is_err());
    }
}
