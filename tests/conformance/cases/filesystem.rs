//! `root`, `mounts`, masked and read-only paths, devices.

use serde_json::json;

use crate::bundle::Bundle;
use crate::runtime::Runtime;

pub fn readonly_root(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"touch /x 2>/dev/null && fail "root is writable"
has "$(mnt_opts /)" ro "root mount options"
touch /dev/shm/x || fail "mounts on a read-only root stay writable""#,
    );
    b.spec["root"]["readonly"] = json!(true);
    rt.check(&b)
}

pub fn hostname_and_domainname(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"eq "$(hostname)" box1 hostname
eq "$(cat /proc/sys/kernel/domainname)" example.test domainname"#,
    );
    b.spec["hostname"] = json!("box1");
    b.spec["domainname"] = json!("example.test");
    rt.check(&b)
}

pub fn sysctl(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"eq "$(cat /proc/sys/net/ipv4/ip_forward)" 1 net.ipv4.ip_forward
eq "$(cat /proc/sys/kernel/shm_rmid_forced)" 1 kernel.shm_rmid_forced"#,
    );
    b.linux()["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"});
    rt.check(&b)
}

pub fn masked_paths(rt: &Runtime) -> Result<(), String> {
    let b = Bundle::new(
        r#"eq "$(stat -c %t:%T /proc/keys)" 1:3 "/proc/keys is /dev/null"
eq "$(head -c 10 /proc/timer_list | wc -c)" 0 "/proc/timer_list reads nothing"
eq "$(ls /sys/firmware | wc -l)" 0 "/sys/firmware is empty"
has "$(mnt_type /sys/firmware)" tmpfs "/sys/firmware is masked by a tmpfs"
has "$(mnt_opts /sys/firmware)" ro "the mask is read-only""#,
    );
    rt.check(&b)
}

pub fn readonly_paths(rt: &Runtime) -> Result<(), String> {
    let b = Bundle::new(
        r#"echo 1 > /proc/sys/kernel/domainname 2>/dev/null && fail "/proc/sys is writable"
has "$(mnt_opts /proc/sys)" ro "/proc/sys options"
has "$(mnt_opts /proc/bus)" ro "/proc/bus options"
touch /proc/bus/x 2>/dev/null && fail "/proc/bus is writable"
true"#,
    );
    rt.check(&b)
}

pub fn rootfs_propagation(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"lacks "$(mnt_tags /)" shared: "private root has no peer group"
lacks "$(mnt_tags /)" master: "private root has no master""#,
    );
    b.linux()["rootfsPropagation"] = json!("private");
    rt.check(&b)
}

fn host_dir(b: &Bundle, name: &str) -> String {
    let dir = b.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("file"), "from the host\n").unwrap();
    dir.display().to_string()
}

pub fn bind_mount_flags(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"eq "$(cat /data/file)" "from the host" "bind source"
o="$(mnt_opts /data)"
for f in ro nosuid nodev noexec; do has "$o" $f "bind options"; done
touch /data/x 2>/dev/null && fail "read-only bind is writable"
eq "$(cat /rw/file)" "from the host" "second bind"
touch /rw/x || fail "read-write bind"
lacks "$(mnt_opts /rw)" ro "rw bind options""#,
    );
    let src = host_dir(&b, "data");
    let rw = host_dir(&b, "rw");
    b.add_mount(
        json!({"destination": "/data", "type": "bind", "source": src,
        "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}),
    );
    b.add_mount(json!({"destination": "/rw", "type": "none", "source": rw, "options": ["bind"]}));
    let r = rt.check(&b);
    if b.path().join("rw/x").exists() {
        r
    } else {
        r.and(Err("a file made in the rw bind is not in its source".into()))
    }
}

pub fn recursive_readonly_bind(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"has "$(mnt_opts /data)" ro "the bind is read-only"
has "$(mnt_opts /data/sub)" ro "the submount under it is read-only too (rro)"
touch /data/sub/x 2>/dev/null && fail "submount is writable""#,
    );
    let src = host_dir(&b, "data");
    // A submount inside the source, which rro must make read-only too.
    let sub = format!("{src}/sub");
    std::fs::create_dir_all(&sub).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs", &sub])
        .status()
        .unwrap();
    assert!(mounted.success());
    b.add_mount(
        json!({"destination": "/data", "type": "bind", "source": src,
        "options": ["rbind", "rro"]}),
    );
    let r = rt.check(&b);
    let _ = std::process::Command::new("umount").arg(&sub).status();
    r
}

pub fn tmpfs_options(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"t="$(mnt_type /scratch)"
has "$t" tmpfs type
has "$t" size=1024k size
has "$t" mode=755 mode
has "$(mnt_opts /scratch)" noexec flags"#,
    );
    b.add_mount(
        json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
        "options": ["noexec", "size=1m", "mode=755"]}),
    );
    rt.check(&b)
}

pub fn special_filesystems(rt: &Runtime) -> Result<(), String> {
    let b = Bundle::new(
        r#"has "$(mnt_type /proc)" proc /proc
has "$(mnt_type /sys)" sysfs /sys
has "$(mnt_opts /sys)" ro "/sys options"
has "$(mnt_type /dev/pts)" devpts /dev/pts
has "$(mnt_type /dev/mqueue)" mqueue /dev/mqueue
has "$(mnt_type /dev/shm)" tmpfs /dev/shm
[ -e /sys/fs/cgroup/memory/memory.limit_in_bytes ] || [ -e /sys/fs/cgroup/cgroup.controllers ] || fail "no cgroup files under /sys/fs/cgroup"
eq "$(readlink /dev/ptmx)" pts/ptmx "/dev/ptmx""#,
    );
    rt.check(&b)
}

pub fn mount_through_symlink_stays_inside(rt: &Runtime) -> Result<(), String> {
    let mut b =
        Bundle::new(r#"has "$(mnt_type /etc/inner)" tmpfs "mount through an in-root symlink""#);
    std::os::unix::fs::symlink("/etc", b.rootfs().join("link")).unwrap();
    std::fs::create_dir_all(b.rootfs().join("etc/inner")).unwrap();
    b.add_mount(json!({"destination": "/link/inner", "type": "tmpfs", "source": "tmpfs"}));
    rt.check(&b)?;
    // An absolute symlink out of the root. A runtime may resolve it inside
    // the root (runc, hull-jail) or refuse the container (crun); it must
    // never mount on the host's directory.
    let mut b = Bundle::new(
        r#"has "$(mnt_type "$(readlink /outside)")" tmpfs "the mount is inside the root""#,
    );
    let outside = b.path().join("host-side");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, b.rootfs().join("outside")).unwrap();
    b.add_mount(json!({"destination": "/outside", "type": "tmpfs", "source": "tmpfs"}));
    let ran = rt.run(&b);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    if mounts.contains(&outside.display().to_string()) {
        return Err(format!("{} was mounted on the host", outside.display()));
    }
    match ran.passed() {
        Ok(()) => Ok(()),
        Err(_) if ran.code != 0 && ran.stdout.is_empty() && !ran.stderr.is_empty() => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn default_devices(rt: &Runtime) -> Result<(), String> {
    let b = Bundle::new(
        r#"for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  n=${d%%:*}
  want=$(echo ${d#*:} | awk -F: '{printf "%x:%x", $1, $2}')
  eq "$(stat -c %F:%t:%T /dev/$n)" "character special file:$want" /dev/$n
  eq "$(stat -c %a /dev/$n)" 666 "/dev/$n mode"
done
echo x > /dev/null || fail "write /dev/null"
eq "$(head -c 4 /dev/zero | wc -c)" 4 "read /dev/zero"
for l in fd:/proc/self/fd stdin:/proc/self/fd/0 stdout:/proc/self/fd/1 stderr:/proc/self/fd/2; do
  eq "$(readlink /dev/${l%%:*})" "${l#*:}" "/dev/${l%%:*}"
done"#,
    );
    rt.check(&b)
}

pub fn spec_devices_and_cgroup_rules(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"eq "$(stat -c '%F %t:%T %a %u:%g' /dev/mydev)" "character special file 1:7 640 1000:100" "spec device"
echo x > /dev/mydev 2>/dev/null; [ $? -ne 0 ] || fail "writing to full succeeds"
mknod /tmp/mem c 1 1 || fail "mknod is allowed by default"
head -c 1 /tmp/mem 2>/dev/null && fail "c 1:1 is not allowed but reads"
true"#,
    );
    b.linux()["devices"] = json!([{"path": "/dev/mydev", "type": "c", "major": 1, "minor": 7,
        "fileMode": 416, "uid": 1000, "gid": 100}]);
    let mut caps = b.process()["capabilities"].clone();
    for set in ["bounding", "effective", "permitted"] {
        caps[set].as_array_mut().unwrap().push(json!("CAP_MKNOD"));
    }
    b.process()["capabilities"] = caps;
    rt.check(&b)
}
