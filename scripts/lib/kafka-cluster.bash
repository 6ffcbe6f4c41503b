# Sourced by scripts/bench-vs-kafka. Runs Apache Kafka from the jars in $kafka_lib (see
# scripts/vs-kafka/pom.xml) as N nodes in KRaft combined mode (each node broker and
# controller, a static controller.quorum.voters), with its data and logs in $work/kafka.

# The JVM settings of Kafka's own kafka-server-start.sh: a 1 GiB heap and G1.
KAFKA_JVM=(-Xms1g -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
  -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true)

free_ports() {  # COUNT: prints COUNT ports nothing listens on
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# Writes the configuration of NODES nodes and formats their storage. Extra server
# properties come from the arguments after NODES (KEY=VALUE). Sets KAFKA_BOOTSTRAP.
configure_kafka_cluster() {  # NODES [KEY=VALUE ...]
  local nodes=$1; shift
  local ports; read -r -a ports <<<"$(free_ports $(( 2 * nodes )))"
  local voters="" id
  for id in $(seq 1 "$nodes"); do voters+="${voters:+,}$id@127.0.0.1:${ports[$(( nodes + id - 1 ))]}"; done
  KAFKA_BOOTSTRAP=""
  rm -rf "$work/kafka"
  local cluster_id; cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid)
  for id in $(seq 1 "$nodes"); do
    local dir="$work/kafka/$id" port=${ports[$(( id - 1 ))]} controller=${ports[$(( nodes + id - 1 ))]}
    mkdir -p "$dir/data"
    KAFKA_BOOTSTRAP+="${KAFKA_BOOTSTRAP:+,}127.0.0.1:$port"
    {
      echo "process.roles=broker,controller"
      echo "node.id=$id"
      echo "controller.quorum.voters=$voters"
      echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller"
      echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
      echo "controller.listener.names=CONTROLLER"
      echo "inter.broker.listener.name=PLAINTEXT"
      echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
      echo "log.dirs=$dir/data"
      echo "offsets.topic.replication.factor=$(( nodes < 3 ? nodes : 3 ))"
      echo "transaction.state.log.replication.factor=$(( nodes < 3 ? nodes : 3 ))"
      echo "transaction.state.log.min.isr=$(( nodes < 2 ? 1 : 2 ))"
      echo "group.initial.rebalance.delay.ms=0"
      printf '%s\n' "$@"
    } >"$dir/server.properties"
    kafka_java kafka.tools.StorageTool format --cluster-id "$cluster_id" --config "$dir/server.properties" >/dev/null
  done
  export KAFKA_BOOTSTRAP
}

kafka_java() {  # CLASS ARGS...: runs a Kafka class, logging to $work/kafka/tools
  mkdir -p "$work/kafka/tools"
  java -Dlog4j2.configurationFile="$PWD/scripts/vs-kafka/log4j2.properties" -Dkafka.logs.dir="$work/kafka/tools" \
    -cp "$kafka_lib/*" "$@"
}

start_kafka_node() {  # ID: starts a configured node; its pid goes into kafka_pids[ID]
  local dir="$work/kafka/$1"
  java "${KAFKA_JVM[@]}" -Dlog4j2.configurationFile="$PWD/scripts/vs-kafka/log4j2.properties" -Dkafka.logs.dir="$dir" \
    -cp "$kafka_lib/*" kafka.Kafka "$dir/server.properties" >"$dir/stdout" 2>&1 &
  kafka_pids[$1]=$!
}

stop_kafka_node() {  # ID [SIGNAL]: stops a node (SIGTERM: Kafka's controlled shutdown)
  local pid=${kafka_pids[$1]:-}
  [[ -n "$pid" ]] || return 0
  kill "-${2:-TERM}" "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "kafka_pids[$1]"
}

declare -A kafka_pids
start_kafka_cluster() {  # NODES: starts every node and waits until all of them answer
  local id
  for id in $(seq 1 "$1"); do start_kafka_node "$id"; done
  for id in $(seq 1 "$1"); do
    local port; port=$(sed -nE 's/^advertised.listeners=PLAINTEXT:\/\/127.0.0.1:([0-9]+)/\1/p' "$work/kafka/$id/server.properties")
    for _ in $(seq 1 600); do
      grep -q "Kafka Server started" "$work/kafka/$id/server.log" 2>/dev/null && break
      kill -0 "${kafka_pids[$id]}" 2>/dev/null || { echo "Kafka node $id exited:"; tail -20 "$work/kafka/$id/stdout" "$work/kafka/$id/server.log"; return 1; }
      sleep 0.1
    done
    grep -q "Kafka Server started" "$work/kafka/$id/server.log" || { echo "Kafka node $id did not start in 60 s"; return 1; }
  done
}

# Stops every node at once, as one would a whole cluster (one node after another, the last
# ones wait for a controller quorum that is gone); kill -9 for any still up after 30 s.
stop_kafka_cluster() {
  local id pid
  for pid in "${kafka_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 300); do
    local running=0
    for pid in "${kafka_pids[@]}"; do if kill -0 "$pid" 2>/dev/null; then running=1; fi; done
    (( running )) || break
    sleep 0.1
  done
  for id in "${!kafka_pids[@]}"; do stop_kafka_node "$id" KILL; done
}
