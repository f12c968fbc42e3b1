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
