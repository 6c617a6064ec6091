//! Generates the Snapshots service from containerd's published `.proto` contract.
//! protox compiles the files in Rust, so building needs no `protoc` on the host.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/containerd/services/snapshots/v1/snapshots.proto"];
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
