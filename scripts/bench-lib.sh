# Sourced by the benchmark scripts, after they set $sock (containerd's
# address) and $ns (their ctr namespace).

# The median of the numbers on stdin, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Kills a task and deletes it and its container, whatever state it is in.
stop_task() { # id
  ctr --address "$sock" -n "$ns" task kill -s KILL "$1" >/dev/null 2>&1 || true
  for _ in $(seq 1 100); do
    ctr --address "$sock" -n "$ns" task delete "$1" >/dev/null 2>&1 && break
    sleep 0.1
  done
  ctr --address "$sock" -n "$ns" container delete "$1" >/dev/null 2>&1 || true
}

# The host processes of pod ID under state directory STATE: its shim (-id ID)
# and the VM's (QEMU, helpers, and for a VM from hull-cache its keeper),
# found by their command line naming the pod's directory or, for a VM booted
# in the cache's pool directory, by their output going into it.
pod_pids() { # id state_dir
  local id=$1 dir=$2/$1 p cmd parent args
  for p in /proc/[0-9]*; do
    mapfile -d '' -t args < "$p/cmdline" 2>/dev/null || continue
    cmd="${args[*]} "
    [[ $cmd == *qemu-system* || $cmd == *vhost-device* || $cmd == *virtiofsd* || $cmd == *hull* ]] || continue
    if [[ $cmd == *"-id $id "* || $cmd == *"$dir/"* || $(readlink "$p/fd/1" 2>/dev/null) == "$dir/"* ]]; then
      echo "${p#/proc/}"
      if [[ $cmd == *qemu-system* ]]; then
        parent=$(awk '{print $4}' "$p/stat")
        if tr '\0' ' ' < "/proc/$parent/cmdline" 2>/dev/null | grep -q "hull-cache keeper"; then echo "$parent"; fi
      fi
    fi
  done
}
