#!/usr/bin/env bash
# The Helm chart test (`make chart-test`, and tests/deploy/test_chart.py):
#   1. installs a pinned helm (go install from the Go module proxy) into .tools/bin and
#      kubernetes-validate (requirements/chart.txt) into .venv, when missing;
#   2. helm lint --strict, for the defaults and every charts/memos/ci/*.yaml;
#   3. helm template for each of those values files, every manifest then validated with
#      kubernetes-validate --strict against each pinned Kubernetes version (offline: the
#      package bundles the API schemas);
#   4. invalid values (wrong type, unknown key, bad enum, impossible combination) must make
#      helm fail, with a message naming the field.
# Rendered manifests are left in $CHART_TEST_OUT (a temporary directory by default) as
# <values>.yaml; bad-values messages as bad-<case>.txt.
# `tools/chart_test.sh --install-only` does step 1 alone (for tools/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v3.21.4
HELM_KUBE_MINOR=36
# The oldest release Chart.yaml's kubeVersion admits, and the newest whose schemas are bundled.
KUBE_VERSIONS=(1.29.0 1.37.0)
CHART=charts/memos
RELEASE=memos
NAMESPACE=memos
PY=.venv/bin/python
HELM=$PWD/.tools/bin/helm
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}

step() { printf '\n== %s\n' "$*"; }

# --- 1. tools ----------------------------------------------------------------------------------
if [ ! -x "$HELM" ] || [ "$("$HELM" version --template '{{.Version}}' 2>/dev/null)" != "$HELM_VERSION" ]; then
  step "installing helm $HELM_VERSION into .tools/bin (go install; the first build takes minutes)"
  [ -x "$GO" ] || { echo "chart-test: go not found (set GO=/path/to/go)" >&2; exit 2; }
  mkdir -p .tools/bin
  # The flags helm's own Makefile sets: without them the binary calls itself "v3.21" and assumes
  # Kubernetes 1.20 when no --kube-version is given (below our kubeVersion). 1.36 is the
  # k8s.io/client-go this helm release is built with (`go version -m .tools/bin/helm`).
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in pkg/lint/rules pkg/chartutil; do
    ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_KUBE_MINOR"
  done
  GOBIN=$PWD/.tools/bin GOFLAGS=-buildvcs=false "$GO" install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
kv_pin=$(sed -n 's/^kubernetes-validate==//p' requirements/chart.txt)
if [ "$("$PY" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" != "$kv_pin" ]; then
  step "installing requirements/chart.txt into .venv"
  "$PY" -m pip install -q -r requirements/chart.txt
fi
[ "${1:-}" = "--install-only" ] && exit 0
OUT=${CHART_TEST_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
KV=(.venv/bin/kubernetes-validate --strict --quiet)
# Helm keeps nothing between runs but caches/config; keep those out of $HOME.
export HELM_CACHE_HOME=$OUT/.helm/cache HELM_CONFIG_HOME=$OUT/.helm/config HELM_DATA_HOME=$OUT/.helm/data

values_files=("$CHART/values.yaml" "$CHART"/ci/*.yaml)
name_of() { basename "$1" .yaml; }

# --- 2. lint -----------------------------------------------------------------------------------
step "helm lint --strict"
for f in "${values_files[@]}"; do
  echo "-- $(name_of "$f")"
  "$HELM" lint --strict "$CHART" -f "$f" --namespace "$NAMESPACE" --kube-version "${KUBE_VERSIONS[-1]}"
done

# --- 3. render and validate ---------------------------------------------------------------------
step "helm template + kubernetes-validate --strict (Kubernetes ${KUBE_VERSIONS[*]})"
for f in "${values_files[@]}"; do
  n=$(name_of "$f")
  for k in "${KUBE_VERSIONS[@]}"; do
    "$HELM" template "$RELEASE" "$CHART" -f "$f" --namespace "$NAMESPACE" --kube-version "$k" > "$OUT/$n.yaml"
    # kubernetes-validate reads one file of many documents; an empty result would pass silently.
    docs=$(grep -c '^kind: ' "$OUT/$n.yaml" || true)
    [ "$docs" -gt 0 ] || { echo "chart-test: $n rendered no objects" >&2; exit 1; }
    "${KV[@]}" -k "$k" "$OUT/$n.yaml"
    echo "ok  $n: $docs objects valid for Kubernetes $k"
  done
done

# --- 4. invalid values must fail on the schema (or the chart's own checks) ----------------------
step "invalid values are refused"
# case name | helm flags | text the error must contain (the field, or the rule broken)
bad_cases=(
  "replicas-type|--set-string gateway.replicas=two|replicas"
  "unknown-key|--set gateway.replicaz=2|replicaz"
  "unknown-top-key|--set gatway.enabled=true|gatway"
  "bad-enum|--set gateway.image.pullPolicy=Sometimes|pullPolicy"
  "bad-log-level|--set common.logLevel=LOUD|logLevel"
  "bad-service-type|--set gateway.service.type=Ingress|type"
  "negative-gpu|--set actmem.gpu=-1|gpu"
  "bad-port|--set textmem.port=70000|port"
  "textmem-scaled-embedded|--set textmem.replicas=3|textmem.replicas"
  "engine-without-uri|--set engines.milvus.enabled=true|engines.milvus.uri"
)
failed=0
for c in "${bad_cases[@]}"; do
  IFS='|' read -r name flags want <<<"$c"
  # shellcheck disable=SC2086  # flags is a list of words on purpose
  if "$HELM" template "$RELEASE" "$CHART" $flags > /dev/null 2> "$OUT/bad-$name.txt"; then
    echo "FAIL $name: helm accepted $flags" >&2; failed=1
  elif ! grep -q -- "$want" "$OUT/bad-$name.txt"; then
    echo "FAIL $name: the error does not name '$want':" >&2; cat "$OUT/bad-$name.txt" >&2; failed=1
  else
    echo "ok  $name: $(grep -m1 -- "$want" "$OUT/bad-$name.txt" | sed 's/^[[:space:]]*//')"
  fi
done
[ "$failed" -eq 0 ] || exit 1

step "chart-test: passed (rendered manifests in $OUT)"
