# syno-chat-gateway — everyday commands. `make test` is what CI runs (through .ci/run).
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: run build release release-pgo test test-rust test-deploy test-e2e openapi lint fmt bench bench-instructions bench-syscalls bench-cpu fuzz clean

## run: build and start the gateway (demo mode with the built-in DSM simulator unless upstream.url is set)
run:
	$(CARGO) run --release --bin syno-chat-gateway -- serve

build:
	$(CARGO) build --all-targets

## release: the exact binary the Dockerfile builds
release:
	$(CARGO) build --release --locked --bin syno-chat-gateway

## release-pgo: the release binary optimised with a profile of its own training run (needs
## `rustup component add llvm-tools`; two release builds) -> target/release-pgo/syno-chat-gateway
release-pgo:
	bash tests/bench/pgo.sh

## test: every suite, each one even when another failed or could not run; one summary with
## every skip at the end (tests/run_all.sh). Fails on a failure, and under CI=true on a skip.
test:
	@bash tests/run_all.sh

test-rust:
	@{ command -v nginx || test -x /usr/sbin/nginx; } >/dev/null || echo "!!!!!! SKIPPING the reverse-proxy test: nginx is not installed (apt-get install nginx) !!!!!!"
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || echo "!!!!!! SKIPPING PostgreSQL tests: no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql) !!!!!!"
	@command -v amtool >/dev/null || echo "!!!!!! SKIPPING the Alertmanager test: prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager) !!!!!!"
	$(CARGO) test --locked --all-targets

test-deploy:
	bash tests/deploy/check_deploy.sh

## test-e2e: the release binary (the one the Dockerfile builds) from Python (hand-written and
## generated clients), contract fuzzing with schemathesis, and Swagger UI in headless Chromium
test-e2e: release
	GATEWAY_BIN=target/release/syno-chat-gateway bash tests/e2e/run.sh

## openapi: regenerate the committed OpenAPI document after changing handlers
openapi:
	$(CARGO) run --quiet --bin syno-chat-gateway -- openapi --output openapi/openapi.json

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## bench: the gateway against nginx forwarding the same DSM calls to a fake NAS (ratios, CPU µs
## per request, p99, RSS); ROUNDS=5 DURATION=5s make bench for steadier figures
bench:
	$(CARGO) build --release --bin syno-chat-gateway --example bench_static --example bench_forward --example bench_page
	bash tests/bench/proxy_overhead.sh

## bench-instructions: user-space instructions per request under callgrind (needs valgrind): an
## exact count, to compare two builds on a noisy machine (tests/bench/instructions.sh OLD NEW)
bench-instructions:
	$(CARGO) build --release --bin syno-chat-gateway
	bash tests/bench/instructions.sh

## bench-syscalls: system calls per request of the cached list and of a static answer (needs
## strace; tests/bench/syscalls.sh)
bench-syscalls:
	$(CARGO) build --release --bin syno-chat-gateway --example bench_static
	bash tests/bench/syscalls.sh

## bench-cpu: user and system CPU µs per request, alternated between builds, and with PERF=1 where
## perf's samples fall (kernel, allocator, page, ...) (tests/bench/cpu_split.sh OLD NEW)
bench-cpu:
	$(CARGO) build --release --bin syno-chat-gateway
	bash tests/bench/cpu_split.sh

## fuzz: coverage-guided fuzzing of what reads untrusted bytes (tests/fuzz; needs cargo-fuzz from
## crates.io): FUZZ_TARGET=formats|markup|chunking|page|misc, FUZZ_SECONDS=300
FUZZ_TARGET ?= formats
FUZZ_SECONDS ?= 300
fuzz:
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $(FUZZ_TARGET) --fuzz-dir tests/fuzz -s none -- \
		-max_total_time=$(FUZZ_SECONDS) -timeout=2 -rss_limit_mb=2048 -max_len=8192

clean:
	$(CARGO) clean
