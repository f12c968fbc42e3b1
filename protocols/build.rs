//! Generates the agent API's protobuf messages and ttrpc stubs into OUT_DIR.
use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

const MODULES: [&str; 6] = [
    "agent",
    "agent_ttrpc",
    "health",
    "health_ttrpc",
    "oci",
    "types",
];

fn main() -> std::io::Result<()> {
    let out_dir = std::env::var("OUT_DIR").map_err(std::io::Error::other)?;
    let protos = [
        "protos/agent.proto",
        "protos/health.proto",
        "protos/oci.proto",
        "protos/types.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Codegen::new()
        .out_dir(&out_dir)
        .inputs(protos)
        .include("protos")
        .rust_protobuf()
        .customize(Customize {
            async_all: true,
            gen_mod: false,
            ..Default::default()
        })
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .run()?;
    // The generated files open with inner attributes (`#![allow(..)]`), which
    // `include!` cannot take; lib.rs puts the equivalent outer attributes on
    // each module instead.
    for module in MODULES {
        let path = std::path::Path::new(&out_dir).join(format!("{module}.rs"));
        let text = std::fs::read_to_string(&path)?;
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
            .collect();
        std::fs::write(&path, kept.join("\n"))?;
    }
    Ok(())
}
