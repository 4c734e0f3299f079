# kuberank — every set-up step is here; README.md names the two that matter: `make demo`, `make test`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Downloads and Go-built binaries live outside the repo, keyed by version, so warm runs are fast.
export KUBERANK_CACHE ?= $(HOME)/.cache/kuberank
export PIP_DISABLE_PIP_VERSION_CHECK := 1
PYTEST_ARGS ?=

.PHONY: help deps system-deps venv tools lint fmt test unit integration e2e test-gpu \
        demo cluster-up cluster-down cluster-status bench clean images
.PHONY: docs sync-chart

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

deps: system-deps venv tools ## install everything: Debian packages, Python venv, Go-built binaries

system-deps: ## Debian packages: prometheus, promtool, alertmanager
	@hack/install-system-deps.sh

venv: $(VENV)/.installed ## the Python virtualenv with kuberank installed editable

$(VENV)/.installed: pyproject.toml constraints.txt hack/install-python.sh
	@hack/install-python.sh "$(PYTHON)" "$(VENV)"
	@touch $@

tools: ## Go-built control plane (etcd, kube-*, kubectl, kwok) and helm, cached by version
	@hack/build-tools.sh

images: system-deps venv ## the operator and inference images (buildah, no registry), as OCI archives in $(KUBERANK_CACHE)/images, cached by content
	@hack/build-images.sh

lint: venv ## ruff, mypy --strict, import-linter
	@echo "==> ruff"; $(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	@echo "==> mypy --strict"; $(VENV)/bin/mypy
	@echo "==> import-linter"; $(VENV)/bin/lint-imports

fmt: venv ## format and autofix
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

test: deps lint images ## install everything, lint, build the images, run the whole suite
	@echo "==> pytest (unit, integration, e2e; gpu tests skip without CUDA)"
	$(PY) -m pytest $(PYTEST_ARGS)

unit: venv ## unit tests only
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: venv ## integration tests only
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

e2e: deps images ## end-to-end tests on the local control plane
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

GPU_TESTS := $(sort $(wildcard tests/*/*/test_*gpu*.py))
test-gpu: ## gpu-marked tests, on a machine with an NVIDIA GPU (uses the python that has torch)
	PYTHONPATH=operator:sidecar:inference:.$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON) -m pytest -c tests/gpu-pytest.ini \
	  --rootdir=. -m gpu $(PYTEST_ARGS) $(GPU_TESTS)

demo: deps ## the main job on the embedded default: local cluster with fake GPU nodes, and more
	@$(PY) -m localcluster demo

cluster-up: deps ## start the local control plane (state in .run/cluster), print how to use it
	@$(PY) -m localcluster up

cluster-down: venv ## stop the local control plane and remove its state
	@$(PY) -m localcluster down

cluster-status: venv ## is the local control plane up?
	@$(PY) -m localcluster status

docs: venv ## regenerate docs/configuration.md, the chart's parameter table, the Grafana dashboard
	@$(PY) -m docgen all
	@hack/sync-chart-files.sh

sync-chart: ## copy crds/, dashboards/ and deploy/prometheus/ into charts/kuberank (Helm reads no outside file)
	@hack/sync-chart-files.sh

clean: cluster-down ## remove the venv and caches inside the repo (not $(KUBERANK_CACHE))
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
