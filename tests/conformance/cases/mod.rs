//! The cases, one function per spec field (or lifecycle behaviour).

mod cgroups;
mod filesystem;
mod lifecycle;
mod namespaces;
mod process;
mod seccomp;

use crate::CaseFn;

pub const ALL: &[(&str, CaseFn)] = &[
    ("process_args_env_cwd", process::args_env_cwd),
    ("process_user_groups_umask", process::user_groups_umask),
    (
        "process_home_from_container_passwd",
        process::home_from_container_passwd,
    ),
    (
        "process_capabilities_of_a_user",
        process::capabilities_of_a_user,
    ),
    (
        "process_capabilities_of_root",
        process::capabilities_of_root,
    ),
    ("process_rlimits", process::rlimits),
    ("process_no_new_privileges", process::no_new_privileges),
    (
        "process_default_signal_state",
        process::default_signal_state,
    ),
    ("process_oom_score_adj", process::oom_score_adj),
    ("process_io_priority", process::process_io_priority),
    ("process_scheduler", process::process_scheduler),
    ("linux_personality", process::linux_personality),
    (
        "process_address_space_is_randomized",
        process::address_space_is_randomized,
    ),
    ("process_exit_codes", process::exit_codes),
    ("root_readonly", filesystem::readonly_root),
    (
        "hostname_and_domainname",
        filesystem::hostname_and_domainname,
    ),
    ("linux_sysctl", filesystem::sysctl),
    ("linux_masked_paths", filesystem::masked_paths),
    ("linux_readonly_paths", filesystem::readonly_paths),
    ("linux_rootfs_propagation", filesystem::rootfs_propagation),
    ("mounts_bind_flags", filesystem::bind_mount_flags),
    (
        "mounts_recursive_readonly",
        filesystem::recursive_readonly_bind,
    ),
    ("mounts_tmpfs_options", filesystem::tmpfs_options),
    (
        "mounts_special_filesystems",
        filesystem::special_filesystems,
    ),
    (
        "mounts_symlinks_stay_inside_root",
        filesystem::mount_through_symlink_stays_inside,
    ),
    ("devices_default_set", filesystem::default_devices),
    (
        "devices_spec_and_cgroup_rules",
        filesystem::spec_devices_and_cgroup_rules,
    ),
    ("namespaces_new", namespaces::new_namespaces),
    ("namespaces_cgroup", namespaces::cgroup_namespace),
    (
        "user_namespace_mappings",
        namespaces::user_namespace_mappings,
    ),
    ("time_namespace_offsets", namespaces::time_namespace_offsets),
    (
        "namespaces_join_by_path",
        namespaces::join_namespaces_by_path,
    ),
    (
        "user_namespace_unprivileged_range",
        namespaces::user_namespace_to_an_unprivileged_range,
    ),
    (
        "mount_namespace_join_by_path",
        namespaces::join_mount_namespace_by_path,
    ),
    ("cgroup_memory", cgroups::memory),
    ("cgroup_cpu_and_cpuset", cgroups::cpu),
    ("cgroup_cpu_realtime", cgroups::cpu_realtime),
    ("cgroup_pids", cgroups::pids),
    ("cgroup_block_io_throttle", cgroups::block_io_throttle),
    ("cgroups_path", cgroups::cgroups_path),
    ("seccomp_errno_with_code", seccomp::errno_with_code),
    ("seccomp_kill_and_trap", seccomp::kill_and_trap),
    ("seccomp_argument_conditions", seccomp::argument_conditions),
    (
        "seccomp_trace_and_log",
        seccomp::trace_without_tracer_and_log,
    ),
    ("hooks_order_and_state", lifecycle::hooks_order_and_state),
    (
        "hooks_failure_fails_create",
        lifecycle::failing_hook_fails_create,
    ),
    (
        "lifecycle_create_start_kill_delete",
        lifecycle::create_start_kill_delete,
    ),
    (
        "lifecycle_delete_force_and_created",
        lifecycle::delete_force_and_created,
    ),
    (
        "lifecycle_exec_joins_the_container",
        lifecycle::exec_joins_the_container,
    ),
    ("lifecycle_pause_resume_list", lifecycle::pause_resume_list),
    (
        "terminal_over_console_socket",
        lifecycle::terminal_over_console_socket,
    ),
    ("run_forwards_signals", lifecycle::run_forwards_signals),
    ("bad_input_is_refused", lifecycle::bad_input_is_refused),
    (
        "log_file_gets_json_errors",
        lifecycle::log_file_gets_json_errors,
    ),
    ("spec_and_features", lifecycle::spec_and_features),
];
