//! hull-cache: keeps booted VMs for Hull's sandboxes (see `hull_shim::cache`).
//!
//!   hull-cache            run the service (foreground; systemd, or `make cache`)
//!   hull-cache status     print how full the pool is; exit 1 if it does not run
//!   hull-cache keeper DIR (started by the service) boot and keep the pool VM of DIR

fn main() {
    std::process::exit(hull_shim::cache::main(std::env::args().skip(1).collect()));
}
