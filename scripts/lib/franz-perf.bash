# Sourced by the benchmarks that drive Kafka's protocol with franz-go. Builds
# scripts/vs-kafka/franz-perf (franz-go from the Go module proxy) into target/vs-kafka when
# it is missing or older than its source, and sets $franz to it.
build_franz_perf() {
  # The Go module cache is the one scripts/install-kafka-clients fills with the same franz-go.
  local src=scripts/vs-kafka/franz-perf cache="$PWD/target/vs-kafka" modules="$PWD/target/kafka-clients/go/mod"
  franz="$cache/franz-perf"
  if [[ ! -x "$franz" || -n "$(find "$src" -newer "$franz" -type f)" ]]; then
    command -v go >/dev/null 2>&1 ||
      { echo "go is missing: install Go (https://go.dev/doc/install, or Debian's golang-go) and run this again" >&2; return 1; }
    echo "==> building franz-perf (franz-go from the Go module proxy)"
    (cd "$src" && GOMODCACHE="$modules" GOCACHE="$cache/go/cache" GOFLAGS="-mod=readonly -modcacherw" \
      go build -o "$franz" .)
  fi
}
