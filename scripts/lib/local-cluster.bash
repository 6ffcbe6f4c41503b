# Sourced by the benchmarks. Needs $bin (a directory with the release binaries) and $work
# (a scratch directory).

# Builds the release binaries unless BENCH_BIN names a directory that has them; sets $bin.
release_binaries() {
  if [[ -n "${BENCH_BIN:-}" ]]; then
    bin="$BENCH_BIN"
  else
    cargo build --release --quiet --bin tributary --bin tributary-broker --bin tributary-controller
    bin="$PWD/target/release"
  fi
}

# Starts `tributary local up` (three brokers, or as ARGS say) on free ports with its data in
# $work/cluster, waits until it is ready, and exports TRIBUTARY_BOOTSTRAP and
# TRIBUTARY_CONTROLLER. Sets $cluster to its pid; stop_local_cluster stops it.
start_local_cluster() {
  "$bin/tributary" local up --data-dir "$work/cluster" --port 0 --http-port 0 --kafka-port 0 --controller-port 0 "$@" >"$work/out" 2>&1 &
  cluster=$!
  for _ in $(seq 1 300); do
    grep -q "^Try:" "$work/out" && break
    kill -0 "$cluster" 2>/dev/null || { cat "$work/out"; exit 1; }
    sleep 0.1
  done
  grep -q "^Try:" "$work/out" || { echo "the local cluster did not start in 30 s:"; cat "$work/out"; exit 1; }
  TRIBUTARY_BOOTSTRAP="$(sed -nE 's/^ *bootstrap: *//p' "$work/out")"
  TRIBUTARY_CONTROLLER="$(sed -nE 's/^ *controller:.*grpc ([0-9.:]+).*/\1/p' "$work/out")"
  KAFKA_BOOTSTRAP="$(sed -nE 's/^ *kafka: *([^ ]+).*/\1/p' "$work/out")"
  export TRIBUTARY_BOOTSTRAP TRIBUTARY_CONTROLLER KAFKA_BOOTSTRAP
}

stop_local_cluster() {
  if [[ -n "${cluster:-}" ]]; then
    kill -INT "$cluster" 2>/dev/null || true
    wait "$cluster" 2>/dev/null || true
  fi
}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
