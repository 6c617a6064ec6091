//! Writes a deterministic benchmark layer to disk, for side-by-side runs against other
//! tools (`tar -xzf`, `tar --zstd -xf`, umoci, ...).
//!
//! ```text
//! cargo run --release --example gen_layer -- small 256 /tmp/layer   # -> /tmp/layer.tar{,.gz,.zst}
//! cargo run --release --example gen_layer -- large 512 /tmp/big
//! ```
//! Arguments: shape (`small` files or `large` files), size in MiB of file data, output
//! path prefix.

#[path = "../src/cmd/bench/workload.rs"]
mod workload;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [shape, mib, prefix] = args.as_slice() else {
        eprintln!("usage: gen_layer small|large SIZE_MIB OUT_PREFIX");
        std::process::exit(2);
    };
    let shape = match shape.as_str() {
        "small" => workload::Shape::SmallFiles,
        "large" => workload::Shape::LargeFiles,
        other => {
            eprintln!("unknown shape {other:?}: small or large");
            std::process::exit(2);
        }
    };
    let mib: u64 = mib.parse().unwrap_or_else(|_| {
        eprintln!("SIZE_MIB must be a number");
        std::process::exit(2)
    });
    let tar = workload::layer(shape, mib << 20, 42);
    std::fs::write(format!("{prefix}.tar"), &tar)?;
    std::fs::write(format!("{prefix}.tar.gz"), workload::gzip(&tar))?;
    std::fs::write(format!("{prefix}.tar.zst"), workload::zstd(&tar))?;
    println!("wrote {prefix}.tar ({} bytes), .tar.gz, .tar.zst", tar.len());
    Ok(())
}
