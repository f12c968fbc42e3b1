#!/bin/sh
# The installer container: stages the payload on the host (/opt/hull is a
# hostPath) and runs hull-node in the host's namespaces, with the host's
# containerd and systemctl. install: then stays, so the DaemonSet's pod is
# Ready while the node has Hull; remove: then stays too (a DaemonSet pod
# must not exit).
set -eu
cmd=${1:-install}
name=${HULL_RUNTIME_NAME:-hull}
stage=/opt/hull/.incoming
host() { nsenter --target 1 --mount --uts --ipc --net -- "$@"; }
case "$cmd" in
install)
  rm -rf /host$stage
  mkdir -p /host$stage
  cp -a /installer/payload/. /host$stage/
  host $stage/bin/hull-node install --payload $stage --runtime-name "$name"
  rm -rf /host$stage
  touch /tmp/hull-installed
  ;;
remove)
  # An installed hull-node does the removal; while Hull pods still run it
  # keeps the runtime registered (exit 75) and is asked again a minute later.
  while node=$(ls -d /host/opt/hull/versions/*/bin/hull-node 2>/dev/null | tail -1) && [ -n "$node" ]; do
    rc=0
    host "${node#/host}" remove --runtime-name "$name" || rc=$?
    [ "$rc" = 75 ] || break
    sleep 60
  done
  ;;
*) echo "usage: entrypoint.sh install|remove" >&2; exit 2 ;;
esac
exec sleep infinity
