//! `linux.resources` and `cgroupsPath`, read back from inside through the
//! container's cgroup mount (this host has cgroup v1; `cg` also reads v2).

use serde_json::json;

use crate::bundle::Bundle;
use crate::runtime::Runtime;

/// `cg CONTROLLER FILE`: the container's value of a cgroup file, wherever
/// the runtime mounted its cgroup (its own directory at the top, or the
/// whole hierarchy with the container at its path).
const CG: &str = r#"
cg() {
  p=$(awk -F: -v c="$1" '$2 ~ "(^|,)"c"(,|$)" || $2 == "" {print $3; exit}' /proc/self/cgroup)
  for f in "/sys/fs/cgroup/$1$p/$2" "/sys/fs/cgroup/$1/$2" "/sys/fs/cgroup$p/$2" "/sys/fs/cgroup/$2"; do
    [ -e "$f" ] && { cat "$f"; return; }
  done
  echo "no $1 $2"
}
"#;

fn bundle(checks: &str) -> Bundle {
    Bundle::new(&format!("{CG}\n{checks}"))
}

pub fn memory(rt: &Runtime) -> Result<(), String> {
    let mut b = bundle(
        r#"eq "$(cg memory memory.limit_in_bytes)" 67108864 limit
eq "$(cg memory memory.soft_limit_in_bytes)" 33554432 reservation
eq "$(cg memory memory.memsw.limit_in_bytes)" 134217728 swap
eq "$(cg memory memory.swappiness)" 10 swappiness"#,
    );
    b.linux()["resources"]["memory"] = json!({"limit": 67108864, "reservation": 33554432,
        "swap": 134217728, "swappiness": 10});
    rt.check(&b)
}

pub fn cpu(rt: &Runtime) -> Result<(), String> {
    let mut b = bundle(
        r#"eq "$(cg cpu cpu.shares)" 512 shares
eq "$(cg cpu cpu.cfs_quota_us)" 20000 quota
eq "$(cg cpu cpu.cfs_period_us)" 100000 period
eq "$(cg cpuset cpuset.cpus)" 0 cpus
eq "$(cg cpuset cpuset.mems)" 0 mems
eq "$(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status)" 0 "the process runs on cpu 0 only""#,
    );
    b.linux()["resources"]["cpu"] = json!({"shares": 512, "quota": 20000, "period": 100000,
        "cpus": "0", "mems": "0"});
    rt.check(&b)
}

pub fn cpu_realtime(rt: &Runtime) -> Result<(), String> {
    let mut b = bundle(
        r#"eq "$(cg cpu cpu.rt_period_us)" 1000000 realtimePeriod
eq "$(cg cpu cpu.rt_runtime_us)" 10000 realtimeRuntime"#,
    );
    b.linux()["resources"]["cpu"] = json!({"realtimeRuntime": 10000, "realtimePeriod": 1000000});
    // Real-time budget comes from the parent: a cgroup right under the root.
    b.linux()["cgroupsPath"] = json!(format!("/{}-rt", rt.id()));
    rt.check(&b)
}

pub fn pids(rt: &Runtime) -> Result<(), String> {
    let mut b = bundle(
        // The fork bomb goes last: its leftovers leave no pid for a check.
        r#"eq "$(cg pids pids.max)" 10 limit
sh -c 'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 2 & done' 2>/dev/null && fail "12 forks under pids.max 10 succeed""#,
    );
    b.linux()["resources"]["pids"] = json!({"limit": 10});
    rt.check(&b)
}

/// The first block device of this host, as `major:minor`.
fn a_block_device() -> (u64, u64) {
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(dev) = std::fs::read_to_string(e.path().join("dev")) {
            if let Some((ma, mi)) = dev.trim().split_once(':') {
                return (ma.parse().unwrap(), mi.parse().unwrap());
            }
        }
    }
    panic!("no block device in /sys/block");
}

pub fn block_io_throttle(rt: &Runtime) -> Result<(), String> {
    let (major, minor) = a_block_device();
    let mut b = bundle(&format!(
        r#"eq "$(cg blkio blkio.throttle.read_bps_device)" "{major}:{minor} 1048576" read_bps
eq "$(cg blkio blkio.throttle.write_iops_device)" "{major}:{minor} 100" write_iops"#
    ));
    b.linux()["resources"]["blockIO"] = json!({
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}]
    });
    rt.check(&b)
}

pub fn cgroups_path(rt: &Runtime) -> Result<(), String> {
    let name = format!("hull-conformance/{}", rt.id());
    let mut b = bundle(&format!(
        r#"has "$(awk -F: '$2 ~ /pids/ {{print $3}}' /proc/self/cgroup)" "/{name}" "cgroupsPath"
[ -d /sys/fs/cgroup/pids ] || [ -e /sys/fs/cgroup/cgroup.controllers ] || fail "no cgroup mount""#
    ));
    b.linux()["cgroupsPath"] = json!(format!("/{name}"));
    let r = rt.check(&b);
    if std::path::Path::new("/sys/fs/cgroup/pids")
        .join(&name)
        .exists()
    {
        return r.and(Err(format!("cgroup {name} outlived its container")));
    }
    r
}
