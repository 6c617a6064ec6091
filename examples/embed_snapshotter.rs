//! A runtime-style use of strata's snapshot store, as a containerd snapshotter would:
//! unpack an image's layers by hand, prepare a container's writable snapshot on top,
//! and print the mount spec a mounter (kernel overlayfs, strata-fuse) would use.
//!
//! ```text
//! cargo run --example embed_snapshotter -- IMAGE [STORE_ROOT]
//! cargo run --example embed_snapshotter -- demo-oci-layout /tmp/strata-example-store
//! ```
//! IMAGE is an OCI layout or docker-save archive. Nothing is mounted.

use std::collections::BTreeMap;
use std::path::PathBuf;

use strata::image::{Image, Selector};
use strata::store::{LayerEvent, Store, UnpackOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let image_path = PathBuf::from(args.next().ok_or("usage: embed_snapshotter IMAGE [STORE_ROOT]")?);
    let root = args.next().map_or_else(|| std::env::temp_dir().join("strata-example-store"), PathBuf::from);

    // 1. Read the image: layers bottom first, each with its diff_id (and blob digest).
    let image = Image::open(&image_path, &Selector::default())?;
    println!("image {} ({}), {} layers", image.name, image.platform, image.layers.len());

    // 2. Unpack every layer into a committed snapshot keyed by its ChainID. Layers that
    //    are already there (shared with another image) are reused, not unpacked again.
    let store = Store::open(&root)?;
    let layers = strata::rootfs::layer_specs(&image, None);
    let report = |event: LayerEvent<'_>| match event {
        LayerEvent::Reused { index, chain } => println!("  layer {} reused     {chain}", index + 1),
        LayerEvent::Started { .. } => {}
        LayerEvent::Committed { index, chain, report } => {
            println!("  layer {} unpacked   {chain} ({} entries)", index + 1, report.entries)
        }
    };
    let outcome = store.unpack(&layers, UnpackOptions::default(), &report)?;
    let top = outcome.chains.last().map(ToString::to_string);

    // 3. A container: an active snapshot on the top layer, with labels like containerd's.
    let key = format!("container-{}", std::process::id());
    let labels = BTreeMap::from([("containerd.io/snapshot/example".to_owned(), "true".to_owned())]);
    let mounts = store.prepare(&key, top.as_deref(), labels)?;

    // 4. What to mount: overlay with these lowers (top-most first), upper and work dirs.
    println!("mount spec for {key}:");
    let lowerdir = mounts.lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    println!("  lowerdir={lowerdir}");
    if let (Some(upper), Some(work)) = (&mounts.upper, &mounts.work) {
        println!("  upperdir={}\n  workdir={}", upper.display(), work.display());
    }
    println!("  e.g. mount -t overlay overlay -o index=off,lowerdir={lowerdir},upperdir=...,workdir=... TARGET");

    // The container is gone: remove its snapshot (layers stay for the next container).
    store.remove(&key)?;
    Ok(())
}
