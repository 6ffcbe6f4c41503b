#!/usr/bin/env bash
# Runs the e2e suite (e2e/tests/kubernetes.rs) on a local Kubernetes control plane whose
# pods run as processes on this machine: no Docker, no kind. See `e2e/local.sh --help`.
set -euo pipefail

usage() {
  cat <<'EOF_USAGE'
Usage: e2e/local.sh [--keep] [--logs DIR] [-- TEST_ARGS...]

Runs Tributary's end-to-end tests on a local Kubernetes cluster without containers.

What it does:
  1. builds kube-apiserver, kube-controller-manager, kube-scheduler and etcd from the Go
     module proxy once (scripts/install-control-plane), and the broker, operator and CLI
     binaries and the e2e node agent with cargo;
  2. starts the control plane on 127.0.0.1 and three test node agents (zones zone-a,
     zone-b, zone-c) that run each pod bound to them as local processes, the built
     binaries standing in for the two images (tributary-e2e-local, see
     e2e/src/local/mod.rs);
  3. renders the operator's Helm chart with the Helm SDK (as scripts/check-chart does)
     and applies it with server-side apply, watching all namespaces;
  4. runs `cargo test -p tributary-e2e --test kubernetes` one test at a time against it;
  5. on failure, keeps the control plane's, the node agents' and every pod's logs in the
     logs directory; then stops every pod and the control plane (unless --keep).

Needs: root with the Rust toolchain on its PATH (each pod gets a mount namespace of its
own, the cluster network and pid namespaces), Linux with overlayfs, Go, Python 3 with
pip, openssl, kcat (installed by scripts/install-kafka-clients when missing), and a
checkout that user 65532 (the broker pods' user) can read.

Options:
  --keep          leave the cluster running after the tests (stop it with Ctrl-C); its
                  kubeconfig is target/e2e-local/kubeconfig
  --logs DIR      where logs go (default: target/e2e-logs)
  -h, --help      this text
  -- TEST_ARGS    passed to the test binary, e.g. `-- scaling`
EOF_USAGE
}

# The second half, in the new network namespace (see the end of this file).
if [[ ${1:-} == __inside ]]; then
  shift
  test_args=("$@")
  kcat=$E2E_LOCAL_KCAT state=$E2E_LOCAL_STATE bin=$E2E_LOCAL_BIN debug=$E2E_LOCAL_DEBUG logs=$E2E_LOCAL_LOGS keep=$E2E_LOCAL_KEEP
  ip link set lo up
  # Every address of the pods' network is local on the loopback device.
  ip addr add 10.244.0.1/16 dev lo

  echo "==> starting the local cluster (logs: $state/cluster.log)"
  "$debug/tributary-e2e-local" up --dir "$state" --bin "$bin" --nodes 3 \
    --image "ghcr.io/tributary-dev/tributary=$debug/tributary-broker" \
    --image "ghcr.io/tributary-dev/tributary-operator=$debug/tributary-operator,run" \
    --image "docker.io/edenhill/kcat=$kcat" \
    --bind-shim "$debug/deps/libtributary_e2e_bind_shim.so" \
    --ready-file "$state/ready" >"$state/cluster.log" 2>&1 &
  cluster=$!

  finish() {
    local status=$?
    if ((status != 0)); then
      echo "==> keeping logs in $logs/local"
      mkdir -p "$logs/local"
      cp -r "$state/logs" "$logs/local/control-plane" 2>/dev/null || true
      cp "$state/cluster.log" "$logs/local/" 2>/dev/null || true
      local node
      for node in "$state"/nodes/*/; do
        [[ -d $node/logs ]] && cp -r "$node/logs" "$logs/local/pods-$(basename "$node")" 2>/dev/null || true
      done
    fi
    if ((keep)) && kill -0 "$cluster" 2>/dev/null; then
      echo "==> the cluster keeps running in namespaces of its own until this script is stopped (Ctrl-C); reach it with: nsenter --target \$(pgrep -f 'tributary-e2e-local up') --net env KUBECONFIG=$state/kubeconfig COMMAND"
    else
      kill -TERM "$cluster" 2>/dev/null || true
      wait "$cluster" 2>/dev/null || true
    fi
    if ((status != 0)); then
      echo "e2e (local): FAILED (exit $status); logs in $logs" >&2
    fi
    exit "$status"
  }
  trap finish EXIT

  for _ in $(seq 1 900); do
    [[ -s $state/ready ]] && break
    if ! kill -0 "$cluster" 2>/dev/null; then
      echo "error: the local cluster stopped while starting:" >&2
      tail -n 40 "$state/cluster.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  if [[ ! -s $state/ready ]]; then
    echo "error: the local cluster was not ready within 180 s:" >&2
    tail -n 40 "$state/cluster.log" >&2
    exit 1
  fi
  export KUBECONFIG=$state/kubeconfig

  echo "==> installing the operator (Helm chart, server-side apply)"
  "$debug/tributary-e2e-local" apply "$state/operator.yaml"

  echo "==> e2e tests"
  TRIBUTARY_E2E_LOGS=$logs cargo test --locked --offline -p tributary-e2e --test kubernetes -- \
    --test-threads=1 --nocapture ${test_args[@]+"${test_args[@]}"}
  echo "==> e2e passed"
  if ((keep)); then
    wait "$cluster"
  fi
  exit 0
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
keep=0
logs=$root/target/e2e-logs
test_args=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --keep) keep=1 ;;
    --logs) logs=${2:?--logs needs a value}; shift ;;
    --) shift; test_args=("$@"); break ;;
    *) echo "error: unknown argument '$1' (see e2e/local.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ $(id -u) != 0 ]]; then
  echo "error: e2e/local.sh runs pods in mount namespaces of their own, which needs root; run it with sudo (or use e2e/kind.sh where Docker is available)" >&2
  exit 1
fi
mkdir -p "$logs"
logs=$(cd "$logs" && pwd)
cd "$root"
mkdir -p target
# One run per checkout: a second would delete the first one's state under its feet.
exec 9>target/e2e-local.lock
if ! flock -n 9; then
  echo "error: another e2e/local.sh is running in this checkout (target/e2e-local.lock); wait for it or stop it" >&2
  exit 1
fi
# The brokers run as their image's user (65532) and execute the built binaries: every
# directory above target/ must let others through.
dir=$root
while [[ $dir != / ]]; do
  if ! (($(stat -c '%a' "$dir") % 10 & 1)); then
    echo "error: $dir does not let other users through (mode $(stat -c '%a' "$dir")), and the broker pods run as user 65532: chmod o+x $dir, or check out the repository elsewhere" >&2
    exit 1
  fi
  dir=$(dirname "$dir")
done

echo "==> control plane binaries"
bin=$(scripts/install-control-plane | tail -n 1)

python_dir=$root/target/python
helm_sdk_version=0.2.2
if ! PYTHONPATH="$python_dir" python3 -c "import helm_python, sys; sys.exit(helm_python.__version__ != '$helm_sdk_version')" 2>/dev/null; then
  echo "==> installing helm-python-sdk into target/python"
  pip=(python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --upgrade --target "$python_dir" "helm-python-sdk==$helm_sdk_version")
  "${pip[@]}" 2>/dev/null || "${pip[@]}" --break-system-packages
fi

echo "==> building the binaries"
# The workspace's test build, which the test command has just made (binaries included; the
# bind shim as the e2e tests' dependency): building the packages alone would resolve
# their features without the dev-dependencies and compile much of it again.
cargo build --locked --workspace --tests
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
debug=$root/target/debug

state=$root/target/e2e-local
rm -rf "$state"
mkdir -p "$state"
PYTHONPATH="$python_dir" python3 e2e/render_chart.py \
  --image-repository ghcr.io/tributary-dev/tributary-operator --image-tag "$version" \
  --namespace tributary-system --release tributary-operator --out "$state/operator.yaml"

# Everything from here runs in a network namespace of its own: the pods' network
# (10.244.0.0/16) lives on its loopback device, and the machine's network settings stay
# as they are. The builds above needed the network; the cluster and the tests do not.
cargo test --locked -p tributary-e2e --test kubernetes --no-run
if ! command -v ip >/dev/null 2>&1 || ! command -v unshare >/dev/null 2>&1; then
  echo "==> installing iproute2 and util-linux (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 util-linux >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 util-linux >/dev/null
  }
fi
# The Kafka-client test's image (docker.io/edenhill/kcat) runs as the machine's kcat,
# which scripts/install-kafka-clients installs.
kcat=$(command -v kcat || true)
if [[ -z $kcat ]]; then
  scripts/install-kafka-clients >/dev/null
  kcat=$(command -v kcat || true)
fi
if [[ -z $kcat ]]; then
  echo "error: kcat is missing (the Kafka-client e2e test runs it as a pod): sudo apt-get install kcat" >&2
  exit 1
fi
export E2E_LOCAL_KCAT=$kcat
export E2E_LOCAL_STATE=$state E2E_LOCAL_BIN=$bin E2E_LOCAL_DEBUG=$debug E2E_LOCAL_LOGS=$logs E2E_LOCAL_KEEP=$keep
# A pid namespace too (with its own /proc, so the agents' pids are what /proc shows): when
# the script ends, however it ends, every process of the cluster ends with it.
exec unshare --net --pid --fork --kill-child --mount --mount-proc -- \
  bash "$root/e2e/local.sh" __inside ${test_args[@]+"${test_args[@]}"}
