# Two commands do all the set-up on a fresh machine:
#   make demo   installs everything and runs the workflow on the embedded default config
#   make test   installs everything and runs the test suite
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin

.PHONY: setup demo test dry-run clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	grep -v '^sam2==' requirements.txt > $(VENV)/requirements-first.txt
	$(BIN)/pip install --quiet -r $(VENV)/requirements-first.txt
	# sam2 is published as source only: built against the torch installed above (an isolated build would
	# download a second torch), without its optional CUDA extension (SAM 2 runs without it)
	SAM2_BUILD_CUDA=0 $(BIN)/pip install --quiet --no-build-isolation -r requirements.txt
	touch $@

demo: setup
	$(BIN)/snakemake --cores $(CORES) --printshellcmds

test: setup browser
	$(BIN)/python -m pytest -q -ra

# the suite without the tests marked slow (pyproject.toml): for contributors while they work (docs/running.md)
.PHONY: test-fast
test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not slow"

# Headless Chromium (Debian's chromium) for tests/test_report_html.py, which opens the Snakemake report in it;
# installed when missing and this is a Debian machine where we are root (CI); otherwise that test skips,
# or fails under CI=true.
.PHONY: browser
browser:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "[setup] installing chromium" >&2; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get update -qq >/dev/null && \
		  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; } || \
		echo "[setup] could not install chromium: tests/test_report_html.py will skip (fail under CI=true)" >&2; \
	fi

dry-run: setup
	$(BIN)/snakemake -n --quiet rules

clean:
	rm -rf results .snakemake

# Performance benchmarks (benchmarks/README.md); BENCH_ARGS=--quick runs each in seconds
.PHONY: bench
bench: setup
	$(BIN)/python benchmarks/data_loading.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/feature_cache.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/trainer_overhead.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/gpu_throughput.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/dag_planning.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/auto_rgn_rates.py $(BENCH_ARGS)
