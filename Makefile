# The two commands in the README: `make demo` (the main job) and `make test` (every test).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint unit cluster clean testenv browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=25.1"

# The main job needs only the core package.
$(VENV)/.core: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

# Tests need every extra and the dev tools.
$(VENV)/.dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[all]' --group dev
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(BIN)/python examples/quickstart.py

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(VENV)/.dev
	$(BIN)/pytest tests/unit

# The control plane (etcd, kube-*, kubectl, helm), the real node (containerd, kubelet, the
# fake GPU plugin) and Kueue's controller manager from the Go module proxy, cached in
# ~/.cache/kubetune/testenv; a no-op once built. The real node's Debian packages (runc, CNI
# plugins, buildah, ...) by apt-get and its images by buildah (cached in /var/lib/containers),
# as root; the build runs these in parallel.
testenv: $(VENV)/.dev
	$(BIN)/python -m tests.testenv.debian
	$(BIN)/python -m tests.testenv.build

# The dashboard's browser tests drive Debian's chromium through its chromium-driver.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver; }

test: lint testenv browser
	$(BIN)/pytest

clean:
	rm -rf $(VENV) build *.egg-info
