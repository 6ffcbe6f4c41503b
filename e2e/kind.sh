#!/usr/bin/env bash
# Runs the e2e suite (e2e/tests/kubernetes.rs) on a kind cluster made for it, with both
# images built from this checkout and the operator installed by its Helm chart. See
# `e2e/kind.sh --help`.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: e2e/kind.sh [--keep] [--name NAME] [--logs DIR] [-- TEST_ARGS...]
       e2e/kind.sh --print-images

Runs Tributary's end-to-end tests on a local Kubernetes cluster in Docker (kind).

Needs: docker (with its daemon running), kind, kubectl, helm and cargo on PATH, and
about 8 GB of memory for Docker.

What it does:
  1. creates the kind cluster NAME (default tributary-e2e) from e2e/kind-config.yaml:
     one control-plane node and three workers (an existing cluster of that name is
     reused, and then kept);
  2. builds the broker and operator images (docker/broker.Dockerfile,
     docker/operator.Dockerfile) tagged as the operator expects them, and loads them
     into the cluster with `kind load docker-image`;
  3. installs the operator with its Helm chart (charts/tributary-operator) into the
     namespace tributary-system, watching all namespaces;
  4. runs `cargo test -p tributary-e2e --test kubernetes` one test at a time against
     it (each test makes the example cluster in a namespace of its own);
  5. on failure, writes the operator's and brokers' logs, `describe` output, events
     and kind's node logs into the logs directory;
  6. deletes the cluster, unless --keep was given or the cluster was reused.

Options:
  --keep           keep the cluster afterwards (delete it with
                   `kind delete cluster --name NAME`)
  --name NAME      the kind cluster's name (default: $TRIBUTARY_E2E_CLUSTER, else
                   tributary-e2e)
  --logs DIR       where logs go on failure (default: target/e2e-logs)
  --print-images   print the two image names it builds and exit
  -h, --help       this text
  -- TEST_ARGS     passed to the test binary, e.g. `-- scaling` runs only the tests whose
                   names contain "scaling"

The kubeconfig of the cluster is written to target/kind-NAME.kubeconfig; with --keep,
`KUBECONFIG=target/kind-NAME.kubeconfig cargo test -p tributary-e2e --test kubernetes
-- --test-threads=1` runs the tests again.
EOF
}

script_dir=${BASH_SOURCE[0]%/*}
[[ $script_dir == "${BASH_SOURCE[0]}" ]] && script_dir=.
root=$(cd "$script_dir/.." && pwd)

keep=0
print_images=0
name=${TRIBUTARY_E2E_CLUSTER:-tributary-e2e}
logs=$root/target/e2e-logs
test_args=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --keep) keep=1 ;;
    --name) name=${2:?--name needs a value}; shift ;;
    --logs) logs=${2:?--logs needs a value}; shift ;;
    --print-images) print_images=1 ;;
    --) shift; test_args=("$@"); break ;;
    *) echo "error: unknown argument '$1' (see e2e/kind.sh --help)" >&2; exit 2 ;;
  esac
  shift
done

# The workspace version: the operator's default image tags.
workspace_version() {
  local line section=""
  while IFS= read -r line; do
    case $line in
      '['*) section=$line ;;
      'version = "'*)
        if [[ $section == '[workspace.package]' ]]; then
          line=${line#version = \"}
          echo "${line%%\"*}"
          return
        fi
        ;;
    esac
  done <"$root/Cargo.toml"
  echo "error: no version in [workspace.package] of $root/Cargo.toml" >&2
  return 1
}
version=$(workspace_version)
broker_repository=ghcr.io/tributary-dev/tributary
operator_repository=ghcr.io/tributary-dev/tributary-operator
broker_image=$broker_repository:$version
operator_image=$operator_repository:$version

if ((print_images)); then
  echo "$broker_image"
  echo "$operator_image"
  exit 0
fi

# Everything it needs, before doing anything.
missing=()
for tool in docker kind kubectl helm cargo; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "error: e2e/kind.sh needs docker, kind, kubectl, helm and cargo on PATH; missing: ${missing[*]}" >&2
  echo "(kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation, helm: https://helm.sh/docs/intro/install/)" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "error: the Docker daemon is not reachable (\`docker info\` failed): start Docker, or point DOCKER_HOST at a running daemon" >&2
  exit 1
fi

mkdir -p "$logs" "$root/target"
# Absolute: the tests run in e2e/, and write there.
logs=$(cd "$logs" && pwd)
kubeconfig=$root/target/kind-$name.kubeconfig
export KUBECONFIG=$kubeconfig
created=0
cluster_up=0

collect_logs() {
  echo "==> collecting logs into $logs"
  kubectl get nodes,clusters.tributary.dev,topics.tributary.dev,statefulsets,deployments,pods,pvc,services -A -o wide \
    >"$logs/objects.txt" 2>&1 || true
  kubectl get events -A --sort-by=.lastTimestamp >"$logs/events.txt" 2>&1 || true
  kubectl -n tributary-system describe deployments,pods >"$logs/operator-describe.txt" 2>&1 || true
  local pod namespace
  for pod in $(kubectl -n tributary-system get pods -o name 2>/dev/null); do
    kubectl -n tributary-system logs "$pod" --timestamps >"$logs/operator-${pod#pod/}.log" 2>&1 || true
    kubectl -n tributary-system logs "$pod" --timestamps --previous \
      >"$logs/operator-${pod#pod/}.previous.log" 2>/dev/null || true
  done
  # Broker pods still there (the tests write their own namespaces' logs as they delete
  # them, into the same directory).
  while read -r namespace pod; do
    [[ -n $pod ]] || continue
    kubectl -n "$namespace" describe pod "$pod" >"$logs/$namespace-$pod-describe.txt" 2>&1 || true
    kubectl -n "$namespace" logs "$pod" --timestamps >"$logs/$namespace-$pod.log" 2>&1 || true
    kubectl -n "$namespace" logs "$pod" --timestamps --previous \
      >"$logs/$namespace-$pod.previous.log" 2>/dev/null || true
  done < <(kubectl get pods -A -l app.kubernetes.io/name=tributary \
    -o jsonpath='{range .items[*]}{.metadata.namespace}{" "}{.metadata.name}{"\n"}{end}' 2>/dev/null || true)
  kind export logs "$logs/kind" --name "$name" >/dev/null 2>&1 || true
}

finish() {
  local status=$?
  if ((status != 0 && cluster_up)); then
    collect_logs
  fi
  if ((created && !keep)); then
    echo "==> deleting the kind cluster $name"
    kind delete cluster --name "$name" >/dev/null 2>&1 || true
    rm -f "$kubeconfig"
  elif ((cluster_up)); then
    echo "==> kept the kind cluster $name (KUBECONFIG=$kubeconfig; delete it with: kind delete cluster --name $name)"
  fi
  if ((status != 0)); then
    echo "e2e: FAILED (exit $status); logs in $logs" >&2
  fi
  exit "$status"
}
trap finish EXIT

if kind get clusters 2>/dev/null | grep -qx -- "$name"; then
  echo "==> reusing the kind cluster $name"
  kind get kubeconfig --name "$name" >"$kubeconfig"
else
  echo "==> creating the kind cluster $name (e2e/kind-config.yaml)"
  created=1
  kind create cluster --name "$name" --config "$root/e2e/kind-config.yaml" \
    --kubeconfig "$kubeconfig" --wait 180s
fi
cluster_up=1

# The chart and the CRDs need Kubernetes 1.33 or newer; say so before building anything.
server="$(kubectl --kubeconfig "$kubeconfig" get --raw /version | tr -d ' \n')"
major="$(sed -nE 's/.*"major":"([0-9]+).*/\1/p' <<<"$server")"
minor="$(sed -nE 's/.*"minor":"([0-9]+).*/\1/p' <<<"$server")"
if (( ${major:-0} * 1000 + ${minor:-0} < 1033 )); then
  echo "error: the cluster $name runs Kubernetes older than 1.33; Tributary needs 1.33 or newer (use a kind release whose default node image is 1.33 or newer, or delete the cluster so that it is made again)" >&2
  exit 1
fi

# BuildKit (the default builder since Docker 23) for the Dockerfiles' cache mounts; the
# images land in the local image store, where `kind load` takes them from.
export DOCKER_BUILDKIT=1
echo "==> building $broker_image"
docker build -f "$root/docker/broker.Dockerfile" -t "$broker_image" "$root"
echo "==> building $operator_image"
docker build -f "$root/docker/operator.Dockerfile" -t "$operator_image" "$root"
echo "==> loading the images into $name"
kind load docker-image --name "$name" "$broker_image" "$operator_image"

echo "==> installing the operator with Helm"
helm upgrade --install tributary-operator "$root/charts/tributary-operator" \
  --namespace tributary-system --create-namespace \
  --set image.repository="$operator_repository" \
  --set image.tag="$version" \
  --set image.pullPolicy=IfNotPresent \
  --set watch.allNamespaces=true \
  --wait --timeout 5m

# cargo test rather than nextest: one test at a time (each makes a cluster of up to five
# brokers), output as it happens, and no per-test time limit but the tests' own waits.
echo "==> e2e tests"
cd "$root"
TRIBUTARY_E2E_LOGS=$logs cargo test --locked -p tributary-e2e --test kubernetes -- \
  --test-threads=1 --nocapture ${test_args[@]+"${test_args[@]}"}
echo "==> e2e passed"
