#!/usr/bin/env bash
# Starts a throwaway Neo4j 5 Community server (embedded, see Launcher.java) for tests:
# Bolt on 127.0.0.1:PORT, auth disabled, data under DATA_DIR.
#
#   tools/neo4j/start.sh --build-only      build tools/neo4j/target if stale, then exit
#   tools/neo4j/start.sh [PORT [DATA_DIR]] build if stale, start in the background, wait until ready
#
# PORT defaults to 7687, DATA_DIR to a new temporary directory. The server's pid goes to
# DATA_DIR/neo4j.pid and its output to DATA_DIR/neo4j.log; on success the last line printed is
#   NEO4J READY bolt://127.0.0.1:PORT pid=PID data=DATA_DIR
# Stop it with: kill $(cat DATA_DIR/neo4j.pid)
#
# Environment:
#   NEO4J_JAVA_OPTS       JVM options (default: -Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1: C1 only,
#                         half the CPU of a short test run; drop TieredStopAtLevel for benchmarks)
#   NEO4J_START_TIMEOUT_S seconds to wait for the ready line (default 180)
#   MEMOS_NEO4J_WATCH_PID the server stops by itself once this process has exited
#
# The first build downloads Neo4j and its dependencies from Maven Central into ~/.m2
# (about 170 MB); later builds run offline (mvn -o) from that cache.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="$here/target"
jar="$target/memos-neo4j-launcher.jar"

build() {
  command -v java >/dev/null 2>&1 || { echo "neo4j: java not found (Java 17+ is needed)" >&2; exit 3; }
  command -v mvn >/dev/null 2>&1 || { echo "neo4j: mvn not found (Maven 3.8+ is needed)" >&2; exit 3; }
  mkdir -p "$target"
  # One build at a time (parallel test runs share target/). The lock's descriptor is closed
  # again before the server starts, so that the server does not inherit and hold it.
  exec 9>"$target/.build.lock"
  flock -w 1200 9 || { echo "neo4j: another build holds $target/.build.lock" >&2; exit 1; }
  if [ ! -f "$jar" ] || [ ! -d "$target/lib" ] || [ -n "$(find "$here/pom.xml" "$here/src" -newer "$jar" -print -quit)" ]; then
    echo "neo4j: building tools/neo4j/target (the first build downloads Neo4j from Maven Central)" >&2
    rm -rf "$target/lib"
    if ! mvn -o -q -B -f "$here/pom.xml" package >"$target/build-offline.log" 2>&1; then
      mvn -q -B -f "$here/pom.xml" package >&2
    fi
    touch "$jar"
  fi
  exec 9>&-
}

build
if [ "${1:-}" = "--build-only" ]; then
  exit 0
fi

timeout_s="${NEO4J_START_TIMEOUT_S:-180}"
timeout_s="${timeout_s%.*}"
port="${1:-7687}"
data="${2:-}"
if [ -z "$data" ]; then
  data="$(mktemp -d "${TMPDIR:-/tmp}/memos-neo4j.XXXXXX")"
fi
mkdir -p "$data"
log="$data/neo4j.log"
# shellcheck disable=SC2086  # NEO4J_JAVA_OPTS is a list of options
nohup java ${NEO4J_JAVA_OPTS:--Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1} -cp "$target/*:$target/lib/*" dev.memos.neo4j.Launcher \
  "$port" "$data/db" ${MEMOS_NEO4J_WATCH_PID:+"$MEMOS_NEO4J_WATCH_PID"} </dev/null >"$log" 2>&1 &
pid=$!
echo "$pid" >"$data/neo4j.pid"

deadline=$((SECONDS + timeout_s))
while ! grep -q "^NEO4J READY" "$log" 2>/dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "neo4j: the server exited before it was ready; its log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  if [ $SECONDS -ge $deadline ]; then
    echo "neo4j: not ready after ${timeout_s}s; stopping it. Its log:" >&2
    tail -n 40 "$log" >&2
    kill "$pid" 2>/dev/null || true
    exit 1
  fi
  sleep 0.2
done
echo "NEO4J READY bolt://127.0.0.1:$port pid=$pid data=$data"
