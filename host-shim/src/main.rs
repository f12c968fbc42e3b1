//! containerd-shim-hull-v2: containerd's shim v2 for Hull VMs.

#[tokio::main]
async fn main() {
    std::process::exit(hull_shim::launch::main().await);
}
