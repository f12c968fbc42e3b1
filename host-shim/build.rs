//! Generates containerd's messages Hull needs (cgroup v2 metrics, the shim
//! bootstrap protocol, SandboxMetrics) into
//! OUT_DIR.
fn main() {
    for proto in ["cgroups_v2_metrics", "bootstrap", "sandbox_metrics"] {
        println!("cargo:rerun-if-changed=proto/{proto}.proto");
    }
    protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .input("proto/cgroups_v2_metrics.proto")
        .cargo_out_dir("cgroups_v2")
        .run_from_script();
    protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .input("proto/bootstrap.proto")
        .cargo_out_dir("bootstrap")
        .run_from_script();
    protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .input("proto/sandbox_metrics.proto")
        .cargo_out_dir("sandbox_metrics")
        .run_from_script();
}
