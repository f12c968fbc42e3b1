//! containerd-shim-hull-v2: containerd's shim v2 for Hull VMs.

#[tokio::main]
async fn main() {
    containerd_shim::asynchronous::run::<hull_shim::service::HullShim>(
        hull_shim::RUNTIME_ID,
        Some(hull_shim::shim_config()),
    )
    .await;
}
