# vidwatch: `make demo` and `make test` on a fresh machine; `make bench`, `make lint` beside them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VIDWATCH := $(VENV)/bin/vidwatch
MODELS := build/models
DEMO_SECONDS ?= 60
export PYTHONUNBUFFERED := 1

.PHONY: demo test lint bench soak models sysdeps image clean help dashboard
help:
	@echo "make demo   - set up .venv, build the shipped models, run the demo (~1 min), show alerts, events page + metrics URL"
	@echo "make test   - run the test suite (installs Debian test servers when run as root)"
	@echo "make bench  - benchmarks -> benchmarks/results/<date>-<host>.{json,md,png}"
	@echo "make lint   - ruff + mypy"
	@echo "make image  - container image localhost/vidwatch:latest (podman; deploy/Dockerfile, BASE_IMAGE=... to choose the base)"
	@echo "make dashboard - regenerate deploy/grafana/vidwatch.json from deploy/grafana/dashboard.py"
	@echo "make soak   - 4 streams for ~10 min: RSS/fds/drops/latency -> benchmarks/results/soak-<date>-<host>.{json,png}"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned (a bare 'torch' pulls a multi-GB CUDA build); it comes from the [models] extra.
	$(PY) -m pip install -q -e '.[models,dev,mqtt]'
	# [gpu] extra: onnx2torch, pure Python; --no-deps keeps its torchvision requirement out
	$(PY) -m pip install -q --no-deps 'onnx2torch>=1.5'
	touch $@

$(MODELS)/.built: $(VENV)/.installed $(wildcard models/*.py models/*/*.py models/weights/*)
	$(VIDWATCH) models build --out $(MODELS)
	touch $@

models: $(MODELS)/.built

sysdeps:
	@bash deploy/install-system-deps.sh || echo "warning: Debian test servers not installed; tests that need them will skip"

demo: $(MODELS)/.built
	rm -rf var/demo
	$(VIDWATCH) run deploy/examples/demo.yaml --duration $(DEMO_SECONDS)
	@echo
	$(VIDWATCH) alerts var/demo/alerts.jsonl
	@echo "snapshots: var/demo/snapshots/  clips: var/demo/evidence/clips/  metrics were served at http://127.0.0.1:9108/metrics while it ran"
	@echo "browse the events again: $(VIDWATCH) events deploy/examples/demo.yaml   -> http://127.0.0.1:9108/events"
	@echo "keep it running: $(VIDWATCH) run deploy/examples/demo.yaml   (Ctrl-C stops)"

test: $(MODELS)/.built sysdeps
	$(PY) -m pytest -q -rs tests

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check pipeline models tests benchmarks deploy
	$(VENV)/bin/mypy pipeline

image: $(MODELS)/.built sysdeps
	bash deploy/image/build.sh

dashboard: $(VENV)/.installed   # regenerate deploy/grafana/vidwatch.json after editing deploy/grafana/dashboard.py
	$(PY) deploy/grafana/dashboard.py

bench: $(MODELS)/.built
	$(PY) -m benchmarks

soak: $(MODELS)/.built
	$(PY) -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf build var .pytest_cache .mypy_cache .ruff_cache
