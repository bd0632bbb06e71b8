#!/usr/bin/env bash
# A guided tour of sandboxlet on one host, from a clean checkout, as root on Debian 12:
# installs the build dependencies, builds, prepares a demo state directory, starts the daemon and
# walks a Sandbox through its life — Running, snapshot, hibernate and resume, restore into a new
# Sandbox — then deletes everything, stops the daemon and leaves the machine as it found it.
#
# No cloud-hypervisor binary is installed on this machine (and no guest could boot here), so the
# Cloud Hypervisor simulator built with the tests (test/chsim, `ch-sim`) stands in for it through
# --vmm-bin. It speaks CH's API and writes real snapshot files; on a KVM host with CH installed,
# drop --vmm-bin and put a real kernel and template in place.
#
#   sudo bash scripts/demo.sh            # build in build-demo/, state in /var/lib/sandboxlet-demo
#   DEMO_BUILD_DIR=build bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

build_dir=${DEMO_BUILD_DIR:-$repo/build-demo}
state_dir=${DEMO_STATE_DIR:-/var/lib/sandboxlet-demo}
run_dir=${DEMO_RUN_DIR:-/run/sandboxlet-demo}
net_prefix=sbldemo
socket=$run_dir/sandboxlet.sock
api_listen=${DEMO_API_LISTEN:-127.0.0.1:6443}
metrics_listen=${DEMO_METRICS_LISTEN:-127.0.0.1:9464}
work=$(mktemp -d /tmp/sandboxlet-demo-XXXXXX)
daemon_pid=""

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
say() { printf '    %s\n' "$*"; }
die() { printf '\ndemo: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  die "run as root (network namespaces, nftables and apt-get need it)"
fi

cleanup() {
  local rc=$?
  set +e
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid"; wait "$daemon_pid" 2>/dev/null
  fi
  # VMMs of the demo's state dir (only present if the demo failed before deleting its sandboxes).
  for pid in $(pgrep -f "ch-sim.*--api-socket path=$state_dir/" 2>/dev/null); do kill -KILL "$pid"; done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$net_prefix-"); do
    ip netns delete "$ns"
  done
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^${net_prefix}v"); do
    ip link delete "$link"
  done
  nft delete table ip "$net_prefix" 2>/dev/null
  for d in /sys/fs/cgroup/sandboxlet-demo /sys/fs/cgroup/*/sandboxlet-demo; do
    [ -d "$d" ] && rmdir "$d"/* "$d" 2>/dev/null
  done
  rm -rf "$state_dir" "$run_dir" "$work"
  if [ $rc -ne 0 ]; then
    printf '\ndemo failed (exit %s); the daemon log was printed above\n' "$rc" >&2
  fi
}
trap cleanup EXIT

sbl() { "$build_dir/cmd/sandboxlet/sandboxlet" "$@"; }
ctl() { sbl ctl "$@" --socket="$socket"; }

# column KIND NAME COLUMN: one cell of `ctl get` (by header name), "" if the object is absent.
column() {
  ctl get "$1" "$2" 2>/dev/null |
    awk -v col="$3" 'NR==1{for(i=1;i<=NF;i++) if($i==col) c=i} NR==2 && c {print $c}'
}

# wait_for KIND NAME COLUMN VALUE [SECONDS]: polls `ctl get` until the cell reads VALUE.
wait_for() {
  local kind=$1 name=$2 col=$3 want=$4 deadline=$((SECONDS + ${5:-60})) got=""
  while [ $SECONDS -lt $deadline ]; do
    got=$(column "$kind" "$name" "$col")
    if [ "$got" = "$want" ]; then
      say "$kind/$name: $col is $want"
      return 0
    fi
    sleep 0.5
  done
  ctl get "$kind" "$name" -o yaml || true
  tail -n 30 "$work/daemon.log" >&2 || true
  die "$kind/$name: $col is \"$got\" after ${5:-60}s, expected $want"
}

wait_gone() {
  local kind=$1 name=$2 deadline=$((SECONDS + 60))
  while [ $SECONDS -lt $deadline ]; do
    if ! ctl get "$kind" "$name" >/dev/null 2>&1; then
      say "$kind/$name is gone"
      return 0
    fi
    sleep 0.5
  done
  die "$kind/$name was not deleted within 60s"
}

step "Installing build dependencies (scripts/install-deps.sh)"
bash scripts/install-deps.sh

step "Building sandboxlet and the CH simulator in $build_dir"
cmake -S "$repo" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSANDBOXLET_BUILD_TESTS=ON -DSANDBOXLET_BUILD_BENCH=OFF >/dev/null
ninja -C "$build_dir" sandboxlet ch-sim
chsim=$build_dir/test/chsim/ch-sim
say "sandboxlet: $build_dir/cmd/sandboxlet/sandboxlet ($(sbl version))"
say "VMM: no cloud-hypervisor is installed on this machine; the CH simulator stands in: $chsim"
say "     ($("$chsim" --version | head -n1))"

step "Preparing the demo state directory $state_dir"
if [ -e "$state_dir/store.db" ]; then
  die "$state_dir already holds a sandboxlet store; remove it or set DEMO_STATE_DIR"
fi
mkdir -p "$state_dir/templates/base" "$state_dir/kernel" "$work/rootfs/sbin" "$work/rootfs/etc"
cat >"$work/rootfs/sbin/init" <<'EOF'
#!/bin/sh
echo "hello from a sandboxlet demo template"
exec /bin/sh
EOF
chmod 0755 "$work/rootfs/sbin/init"
echo "sandboxlet-demo" >"$work/rootfs/etc/hostname"
truncate -s 64M "$state_dir/templates/base/rootfs.ext4"
mkfs.ext4 -q -F -L rootfs -d "$work/rootfs" "$state_dir/templates/base/rootfs.ext4"
say "template base: $state_dir/templates/base/rootfs.ext4 ($(du -h --apparent-size "$state_dir/templates/base/rootfs.ext4" | cut -f1), ext4 built with mkfs.ext4 -d)"
printf 'not a kernel: the CH simulator boots no guest\n' >"$state_dir/kernel/vmlinux"
say "kernel: $state_dir/kernel/vmlinux (a stand-in file; the simulator does not boot it)"

step "Starting the daemon (log: $work/daemon.log)"
# The binary itself goes to the background (not a shell function), so $! is the daemon's pid.
"$build_dir/cmd/sandboxlet/sandboxlet" run --state-dir="$state_dir" --run-dir="$run_dir" --vmm-bin="$chsim" \
  --network-prefix="$net_prefix" --vmm-cgroup-parent=sandboxlet-demo --api-listen="$api_listen" --metrics-listen="$metrics_listen" \
  >"$work/daemon.log" 2>&1 &
daemon_pid=$!
deadline=$((SECONDS + 30))
until grep -q 'msg="sandboxlet ready"' "$work/daemon.log"; do
  if ! kill -0 "$daemon_pid" 2>/dev/null; then
    cat "$work/daemon.log" >&2
    daemon_pid=""
    die "the daemon exited at startup"
  fi
  [ $SECONDS -lt $deadline ] || die "the daemon did not become ready within 30s"
  sleep 0.2
done
say "pid $daemon_pid; gRPC on $socket; REST API on http://$api_listen; metrics on http://$metrics_listen"
say "readyz: $(curl -s "http://$metrics_listen/readyz" | tail -n1)"

step "Applying examples/sandbox.yaml"
ctl apply -f examples/sandbox.yaml
wait_for sandboxes demo PHASE Running
ctl get sandboxes

step "Snapshotting it: examples/snapshot.yaml"
ctl apply -f examples/snapshot.yaml
wait_for sandboxsnapshots demo-snap PHASE Ready
ctl get sandboxsnapshots
say "size on disk (allocated blocks): $(ctl get sandboxsnapshots demo-snap -o yaml | awk '/sizeBytes:/{print $2}') bytes"

step "Hibernating demo (spec.power: Hibernated): snapshot to disk, VMM stopped"
sed 's/^  power: Running$/  power: Hibernated/' examples/sandbox.yaml >"$work/demo-hibernated.yaml"
grep -q 'power: Hibernated' "$work/demo-hibernated.yaml" || die "could not edit examples/sandbox.yaml"
ctl apply -f "$work/demo-hibernated.yaml"
wait_for sandboxes demo PHASE Hibernated
ctl get sandboxes
say "VMM processes running: $(pgrep -fc "ch-sim.*--api-socket path=$state_dir/" || true) (a hibernated sandbox has none)"

step "Resuming demo (spec.power: Running): restored from its hibernation snapshot"
ctl apply -f examples/sandbox.yaml
wait_for sandboxes demo PHASE Running
ctl get sandboxes

step "Restoring the snapshot into a new Sandbox: examples/restore.yaml"
ctl apply -f examples/restore.yaml
wait_for sandboxes demo-restored PHASE Running
ctl get sandboxes
ctl get sandboxes demo-restored -o yaml | sed -n '/^status:/,$p' | sed -n '1,12p'

step "The same objects through kubectl and the local REST API"
sbl kubeconfig --api-listen="$api_listen" >"$work/kubeconfig"
if KUBECONFIG=$work/kubeconfig kubectl version >/dev/null 2>&1; then
  KUBECONFIG=$work/kubeconfig kubectl get sandboxes,sandboxsnapshots
else
  say "kubectl could not reach http://$api_listen (not installed?); skipped"
fi

step "Metrics: snapshot disk usage and sandboxes by phase"
curl -s "http://$metrics_listen/metrics" |
  grep -E '^sandboxlet_(snapshot_disk_usage_bytes|snapshot_disk_usage_total_bytes|sandbox_phase)' |
  head -n 12 || true

step "Deleting everything"
ctl delete sandboxes demo demo-restored
ctl delete sandboxsnapshots demo-snap
wait_gone sandboxes demo
wait_gone sandboxes demo-restored
wait_gone sandboxsnapshots demo-snap
say "VMM processes left: $(pgrep -fc "ch-sim.*--api-socket path=$state_dir/" || true)"

step "Stopping the daemon (SIGTERM)"
kill -TERM "$daemon_pid"
wait "$daemon_pid"
say "exit status $?"
daemon_pid=""
tail -n 2 "$work/daemon.log" | sed 's/^/    /'

step "Done: state, network and processes of the demo are removed on exit"
