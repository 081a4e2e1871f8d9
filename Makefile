# The commands the README shows. `make test` is also what CI runs.
.PHONY: test test-redis-cluster run fmt lint chart-check manifests values-schema fuzz-check fuzz bench

# The chart checks need the Python packages of tests/chart/requirements.txt and promtool.
PYTHON ?= python3

test:
	bash scripts/install-test-deps.sh
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --all-targets; \
	else \
		cargo test --all-targets; \
	fi
	$(MAKE) test-redis-cluster
	cargo test --doc
	$(MAKE) fuzz-check
	$(MAKE) chart-check

# The tests that use Redis once more, against a Redis Cluster of three masters on local ports
# (created with redis-cli --cluster create) instead of one redis-server.
test-redis-cluster:
	@if cargo nextest --version >/dev/null 2>&1; then \
		DESKHOOK_TEST_REDIS=cluster cargo nextest run --test redis_queue --test backtest \
			-E 'binary(redis_queue) | test(/redis/)'; \
	else \
		DESKHOOK_TEST_REDIS=cluster cargo test --test redis_queue && \
		DESKHOOK_TEST_REDIS=cluster cargo test --test backtest redis; \
	fi

run:
	ZOHO_WEBHOOK_SECRET=dev cargo run --release -- serve --config examples/local.yaml --metrics-listen 127.0.0.1:9090 --console-open

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

# Helm lint, renderings validated against Kubernetes and the CRD, the Deployment against the
# binary, alerts against its metrics and a live Prometheus, the Dockerfile, and drift of
# manifests/ and of values.schema.json.
chart-check:
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON) -m pytest -p no:cacheprovider tests/chart

# Regenerates manifests/deskhook.yaml (the chart with default values, for kubectl apply).
manifests:
	$(PYTHON) tests/chart/render.py --output manifests/deskhook.yaml

# Regenerates the webhookAutomation.spec part of the chart's values.schema.json from the CRD
# (run after `deskhook crd` changed crds/ and the chart's copy).
values-schema:
	$(PYTHON) tests/chart/values_schema.py

# Builds release binaries and measures intake against the reference peers (../shared/peers, or
# PEERS_DIR), the Redis queue (needs redis-server; --no-redis leaves it out), start-up, memory,
# binary size and the workflow against the fake Zoho; prints tables with ratios. BENCH_ARGS
# passes options to bench/run.py (e.g. --duration 8 --reps 3).
bench:
	$(PYTHON) bench/run.py $(BENCH_ARGS)

# The fuzz targets (fuzz/, cargo-fuzz layout) must keep building on stable; running them needs
# cargo-fuzz and a nightly compiler (see fuzz/README.md).
fuzz-check:
	cargo check --manifest-path fuzz/Cargo.toml --bins --locked

# A bounded run of every fuzz target (FUZZ_SECONDS each).
FUZZ_SECONDS ?= 60
fuzz:
	cd fuzz && for target in $$(cargo fuzz list); do \
		cargo fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 || exit 1; \
	done
