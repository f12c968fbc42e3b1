//! The configuration: broken files named, per-task ConfigPath,
//! annotations, refused hooks.

use super::*;
use crate::env::{run, Env};

fn config_error_is_named(
    env: &Env,
    key: &str,
    replaced: (&str, &str),
    name: &str,
) -> Result<(), String> {
    let bad = env.good_config().replace(replaced.0, replaced.1);
    if bad == env.good_config() {
        return Err(format!(
            "test bug: {:?} not in the configuration",
            replaced.0
        ));
    }
    env.write_config(&bad)?;
    let o = run(&mut env.run_cmd(&env.unique(name), &["true"]));
    env.restore_config()?;
    let o = o?;
    if o.status.success() {
        return Err("ctr succeeded with a broken configuration".into());
    }
    let err = stderr(&o);
    if !err.contains(key) || !err.contains(replaced.1.split('"').nth(1).unwrap_or(replaced.1)) {
        return Err(format!(
            "error does not name {key} and the missing path: {err}"
        ));
    }
    Ok(())
}

pub(super) fn missing_kernel_is_named(env: &Env) -> Result<(), String> {
    config_error_is_named(
        env,
        "hypervisor.kernel",
        (
            "kernel = \"/usr/local/share/hull/vmlinux\"",
            "kernel = \"/nonexistent/vmlinux\"",
        ),
        "nokernel",
    )
}

pub(super) fn missing_helper_is_named(env: &Env) -> Result<(), String> {
    config_error_is_named(
        env,
        "shared_fs.virtiofsd",
        (
            "virtiofsd = \"/usr/local/bin/virtiofsd\"",
            "virtiofsd = \"/nonexistent/virtiofsd\"",
        ),
        "nohelper",
    )
}

/// `vsock.transport = "kernel"`: on a host with `/dev/vhost-vsock` the
/// container runs over AF_VSOCK; on one without (like this one) the error
/// names the device and the key instead of a VM that never answers.
pub(super) fn kernel_vsock_transport_runs_or_names_the_device(env: &Env) -> Result<(), String> {
    let kernel = env
        .good_config()
        .replace("transport = \"hybrid\"", "transport = \"kernel\"");
    if kernel == env.good_config() {
        return Err("test bug: transport = \"hybrid\" not in the configuration".into());
    }
    env.write_config(&kernel)?;
    let o = run(&mut env.run_cmd(&env.unique("kvsock"), &["echo", "over-af-vsock"]));
    env.restore_config()?;
    let o = o?;
    if std::path::Path::new("/dev/vhost-vsock").exists() {
        expect_success(&o)?;
        if stdout(&o) != "over-af-vsock\n" {
            return Err(format!("stdout {:?}", stdout(&o)));
        }
        return Ok(());
    }
    let err = stderr(&o);
    if o.status.success() || !err.contains("vsock.transport") || !err.contains("/dev/vhost-vsock") {
        return Err(format!(
            "want an error naming vsock.transport and /dev/vhost-vsock: {err}"
        ));
    }
    Ok(())
}

/// containerd's runtime option ConfigPath (`ctr run --runtime-config-path`,
/// or CRI's runtime `options`) picks the Hull configuration for one task:
/// its VM size applies, and its mistakes are named with its path.
pub(super) fn runtime_config_path_chooses_the_configuration(env: &Env) -> Result<(), String> {
    let alt = env.path("alt-configuration.toml");
    let bigger = env
        .good_config()
        .replace("memory_mib = 512", "memory_mib = 768");
    if bigger == env.good_config() {
        return Err("test bug: memory_mib = 512 not in the configuration".into());
    }
    std::fs::write(&alt, &bigger).map_err(|e| e.to_string())?;
    let option = ["--runtime-config-path", alt.to_str().unwrap_or_default()];
    let default = guest_mem_total_kb(env, "memdefault", &[])?;
    let chosen = guest_mem_total_kb(env, "memchosen", &option)?;
    if chosen < default + 200 * 1024 {
        return Err(format!(
            "MemTotal {chosen} kB with 768 MiB configured, {default} kB with 512 MiB"
        ));
    }
    let broken = bigger.replace(
        "kernel = \"/usr/local/share/hull/vmlinux\"",
        "kernel = \"/nonexistent/alt-vmlinux\"",
    );
    std::fs::write(&alt, broken).map_err(|e| e.to_string())?;
    let o = run(&mut env.run_with(&env.unique("altbroken"), &option, &["true"]))?;
    let _ = run(env
        .ctr()
        .args(["container", "delete", &env.unique("altbroken")]));
    let err = stderr(&o);
    if o.status.success() || !err.contains("alt-vmlinux") || !err.contains(&*alt.to_string_lossy())
    {
        return Err(format!("a broken chosen configuration: {err}"));
    }
    Ok(())
}

/// `io.hull.config.<key>` annotations: refused (by name) unless the
/// configuration's allowlist has the key; applied when it does.
pub(super) fn annotations_change_only_allowlisted_keys(env: &Env) -> Result<(), String> {
    let attempt = |name: &str, annotation: &str| -> Result<std::process::Output, String> {
        let o = run(&mut env.run_with(&env.unique(name), &["--annotation", annotation], &["true"]));
        let _ = run(env.ctr().args(["container", "delete", &env.unique(name)]));
        o
    };
    let memory = "io.hull.config.hypervisor.memory_mib=768";
    let o = attempt("annot-denied", memory)?;
    if o.status.success() || !stderr(&o).contains("annotation_allowlist") {
        return Err(format!("an annotation off the allowlist: {}", stderr(&o)));
    }
    let o = attempt("annot-unknown", "io.hull.config.hypervisor.path=/bin/sh")?;
    if o.status.success() || !stderr(&o).contains("unknown Hull annotation") {
        return Err(format!("an unknown Hull annotation: {}", stderr(&o)));
    }
    let allowing = env.good_config().replace(
        "annotation_allowlist = []",
        "annotation_allowlist = [\"hypervisor.memory_mib\"]",
    );
    if allowing == env.good_config() {
        return Err("test bug: annotation_allowlist = [] not in the configuration".into());
    }
    env.write_config(&allowing)?;
    let mem = guest_mem_total_kb(env, "annot-applied", &["--annotation", memory]);
    env.restore_config()?;
    let mem = mem?;
    // 512 MiB configured, 768 MiB asked for.
    if mem < 600 * 1024 {
        return Err(format!(
            "MemTotal {mem} kB: the allowed annotation was not applied"
        ));
    }
    Ok(())
}

/// A spec with OCI hooks (which Hull does not run yet) fails at create,
/// naming them, instead of starting without them.
pub(super) fn hooks_are_refused_by_name(env: &Env) -> Result<(), String> {
    let spec = run(env.ctr().args(["oci", "spec"]))?;
    expect_success(&spec)?;
    let with_hook = stdout(&spec).replacen(
        '{',
        r#"{"hooks":{"poststop":[{"path":"/usr/local/bin/cleanup-hook"}]},"#,
        1,
    );
    let file = env.path("hook-spec.json");
    std::fs::write(&file, with_hook).map_err(|e| e.to_string())?;
    let id = env.unique("hooks");
    let mut cmd = env.ctr();
    cmd.args(["run", "--rm", "--runtime", crate::env::RUNTIME, "--config"])
        .arg(&file)
        .arg(&id);
    let o = run(&mut cmd)?;
    let _ = run(env.ctr().args(["container", "delete", &id]));
    if o.status.success() || !stderr(&o).contains("poststop: /usr/local/bin/cleanup-hook") {
        return Err(format!("a spec with hooks: {:?} {}", o.status, stderr(&o)));
    }
    Ok(())
}
