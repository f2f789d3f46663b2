# One Makefile: install, lint, typecheck, test, run, bench.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1

.PHONY: install install-llm lock lint typecheck test test-fast run bench bench-load soak train-shipped clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

# Pinned from the lockfile; torch/torchvision install from this machine's local wheels.
install: $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@# The browser tests drive Debian's Chromium (Playwright's own download is not used).
	@command -v chromium >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq chromium; else \
		echo "note: the browser tests need Debian's chromium: sudo apt-get install -y chromium"; fi; }
	@$(BIN)/python -c "import llama_cpp" 2>/dev/null || \
		echo "note: llama-cpp-python (for the LLM tests) is built from source by 'make install-llm' (~13 min once)"

# The OpenAI-compatible llama.cpp server the explainer tests talk to (built from source,
# cached by pip afterwards).
install-llm: $(BIN)/python
	$(BIN)/pip install --quiet "llama-cpp-python[server]==0.3.36"

lock: $(BIN)/python
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e ' > requirements.lock

lint:
	$(BIN)/ruff check common services tests scripts bench
	$(BIN)/ruff format --check common services tests scripts bench

typecheck:
	$(BIN)/mypy common services bench

test:
	$(BIN)/pytest

test-fast:
	$(BIN)/pytest tests/unit -x -q

run: install
	$(BIN)/aigi run

# Benchmarks (JSON under bench/results/ + summary.md); speed is never asserted in tests.
bench:
	$(BIN)/aigi bench all

# Open-loop load against the real stack: submit latency percentiles and completion
# (add --profile to py-spy the gateway at the highest rate; it costs CPU itself).
bench-load:
	$(BIN)/aigi bench load --rates 50,100,200 --duration 10 --warmup 3 --gateway-processes 2 --worker-nice 19

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
