#!/usr/bin/env bash
# The Go and TypeScript clients, generated from protos/ with buf (docs/clients.md).
#
#   tools/gen_clients.sh          generate clients/go/gen (committed) and clients/ts/src/gen (build time)
#   tools/gen_clients.sh --build  generate, then compile both (go build, vet and test; tsc)
#   tools/gen_clients.sh --check  fail if the committed clients/go/gen is stale (CI lint)
#   tools/gen_clients.sh --tools  install the pinned tools only: Go plugins into .tools/bin,
#                                 clients/go's modules, clients/ts's npm packages (setup)
#
# Tools are installed on first use; only --tools and first use reach the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

BUF=node_modules/.bin/buf
TOOLS_BIN=$PWD/.tools/bin
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
MODE=${1:-gen}

die() { echo "gen_clients: $*" >&2; exit 1; }

[ -x "$BUF" ] || die "$BUF is missing; run 'make setup' (npm ci at the repository root)"

go_plugins() {
  [ -x "$GO" ] || die "go not found (looked on PATH and at /usr/local/go/bin/go); install Go 1.26+"
  if [ "$("$TOOLS_BIN/protoc-gen-go" --version 2>/dev/null)" != "protoc-gen-go $PROTOC_GEN_GO_VERSION" ]; then
    echo "gen_clients: installing protoc-gen-go $PROTOC_GEN_GO_VERSION into .tools/bin"
    GOBIN=$TOOLS_BIN "$GO" install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
  fi
  if [ "$("$TOOLS_BIN/protoc-gen-go-grpc" --version 2>/dev/null)" != "protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC_VERSION#v}" ]; then
    echo "gen_clients: installing protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC_VERSION into .tools/bin"
    GOBIN=$TOOLS_BIN "$GO" install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
  fi
}

ts_packages() {
  command -v npm >/dev/null || die "npm not found; install Node.js 18+"
  # npm ci again only when the lock file changed since the last install.
  local stamp=clients/ts/node_modules/.ci-stamp
  if [ ! -f "$stamp" ] || [ clients/ts/package-lock.json -nt "$stamp" ]; then
    echo "gen_clients: npm ci in clients/ts"
    (cd clients/ts && npm ci --silent --no-audit --no-fund) && touch "$stamp"
  fi
}

gen_go() { "$BUF" generate --template clients/go/buf.gen.yaml "$@"; }
gen_ts() { "$BUF" generate --template clients/ts/buf.gen.yaml; }

case "$MODE" in
  --tools)
    go_plugins
    # Download clients/go's modules and fill the build cache, so tests compile offline and fast.
    (cd clients/go && "$GO" mod download && "$GO" build ./...)
    ts_packages
    echo "gen_clients: tools ready"
    ;;
  --check)
    go_plugins
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    gen_go --output "$tmp"
    if diff -r -q "$tmp/clients/go/gen" clients/go/gen >/dev/null 2>&1; then
      echo "clients: clients/go/gen up to date"
    else
      echo "clients: clients/go/gen is stale or missing; run 'make clients'" >&2
      diff -r -q "$tmp/clients/go/gen" clients/go/gen >&2 || true
      exit 1
    fi
    ;;
  gen | --build)
    go_plugins
    ts_packages
    gen_go
    gen_ts
    echo "gen_clients: generated clients/go/gen and clients/ts/src/gen"
    if [ "$MODE" = --build ]; then
      (cd clients/go && "$GO" build ./... && "$GO" vet ./... && "$GO" test ./...)
      (cd clients/ts && node_modules/.bin/tsc -p tsconfig.json)
      echo "gen_clients: both clients compile"
    fi
    ;;
  *)
    die "unknown mode $MODE (use --build, --check or --tools)"
    ;;
esac
