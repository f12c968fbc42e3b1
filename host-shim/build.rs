//! Generates containerd's cgroup v2 metrics message into OUT_DIR.
fn main() {
    println!("cargo:rerun-if-changed=proto/cgroups_v2_metrics.proto");
    protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .input("proto/cgroups_v2_metrics.proto")
        .cargo_out_dir("cgroups_v2")
        .run_from_script();
}
