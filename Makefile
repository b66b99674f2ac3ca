# raygpu: `make help` lists every target.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RAYGPU := $(VENV)/bin/raygpu
# The operator's side alone (plan, render: no Ray, no torch), and everything.
OPERATOR_STAMP := $(VENV)/.operator.stamp
STAMP := $(VENV)/.requirements.stamp
# The CrossGuard pack's own environment (pulumi-policy pins a protobuf Ray refuses).
POLICY_VENV := infra/policy/venv
POLICY_STAMP := $(POLICY_VENV)/.requirements.stamp
STACK ?= dev
OUT ?= rendered/$(STACK)
ARGS ?=
PYTEST_ARGS ?=
# pip on this kind of machine prints a warning per package for its local mirrors
PIP_QUIET := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: help venv venv-operator venv-policy test test-fast lint fmt demo tune plan render train serve destroy orphans bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'
	@echo "  variables: STACK=$(STACK) (dev|prod), OUT, CHECKPOINT, ARGS, PYTEST_ARGS"

$(OPERATOR_STAMP): requirements-operator.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the operator's side into $(VENV) (no Ray, no torch)"
	$(PY) -m pip install -q -r requirements-operator.txt 2>&1 | $(PIP_QUIET)
	$(PY) -m pip install -q --no-deps -e . 2>&1 | $(PIP_QUIET)
	@touch $(OPERATOR_STAMP)

$(STAMP): requirements.txt $(OPERATOR_STAMP)
	@echo "installing requirements.txt into $(VENV) (first time: several minutes, ~7 GB)"
	$(PY) -m pip install -q -r requirements.txt 2>&1 | $(PIP_QUIET)
	@$(PY) -c "import ray, torch, torchvision, pulumi, pulumi_aws, pulumi_kubernetes, raygpu"
	@touch $(STAMP)

$(POLICY_STAMP): infra/policy/requirements.txt requirements-operator.txt pyproject.toml
	@test -x $(POLICY_VENV)/bin/python || $(PYTHON) -m venv $(POLICY_VENV)
	@echo "installing the policy pack's environment into $(POLICY_VENV)"
	cd infra/policy && venv/bin/python -m pip install -q -r requirements.txt 2>&1 | $(PIP_QUIET)
	@touch $(POLICY_STAMP)

venv-policy: $(POLICY_STAMP) ## the CrossGuard pack's environment (pulumi preview --policy-pack infra/policy)

venv-operator: $(OPERATOR_STAMP) ## install the operator's side only (plan, render, destroy, orphans)

venv: $(STAMP) ## create .venv and install everything pinned (Ray, torch, test tools)

# Debian's prometheus package: Prometheus 2.42 and promtool, for the alert-rule and
# local-Prometheus tests and `raygpu monitor --local`. Only where missing, as root
# with apt-get; elsewhere the tests that need it skip and say why. (The package's
# service is not started where there is no systemd; where there is, apt starts it.)
.PHONY: prometheus
prometheus: ## install Prometheus and promtool (Debian's package) where missing and possible
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "prometheus not installed and apt-get unavailable here (needs root): its tests skip; apt-get install prometheus"; \
	else echo "installing Debian's prometheus package (Prometheus, promtool)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get install -y -q --no-install-recommends prometheus || \
	    { apt-get update -q && apt-get install -y -q --no-install-recommends prometheus; }; } >/dev/null 2>&1 || \
	  echo "apt-get could not install prometheus: its tests skip"; fi

# Azurite, Azure Blob Storage's emulator (npm), for the abfs:// storage tests; the
# one place its version is pinned. Node.js and npm come from the machine.
AZURITE_VERSION := 3.37.0
AZURITE_STAMP := .tools/azurite/.installed-$(AZURITE_VERSION)
.PHONY: azurite
azurite: $(AZURITE_STAMP) ## install Azurite (Azure Blob emulator, npm) into .tools/azurite
$(AZURITE_STAMP):
	@command -v npm >/dev/null || { echo "npm not found: install Node.js and npm (apt-get install nodejs npm)"; exit 1; }
	@echo "installing Azurite $(AZURITE_VERSION) into .tools/azurite (npm)"
	npm install --prefix .tools/azurite --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION) >/dev/null
	touch $@

test: $(STAMP) $(POLICY_STAMP) prometheus azurite ## run the whole test suite (real local Ray, S3 API on loopback, Pulumi mocks)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) prometheus azurite ## run the tests not marked slow
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff: lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(STAMP) ## ruff: fix and format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: $(STAMP) ## the main job on a local Ray cluster: train (2 workers, digits), serve, check
	$(RAYGPU) demo

tune: $(STAMP) ## a small hyper-parameter search (Optuna + ASHA, 8 trials) on the digits MLP, local Ray; the same run resumes
	cd ray_jobs && ../$(PY) tune.py --num-samples 8 --epochs 6 --storage-path ../demo-output/tune --name digits-mlp $(ARGS)

plan: $(OPERATOR_STAMP) ## offline plan with hourly cost for STACK (no credentials, no Pulumi CLI)
	$(RAYGPU) plan --stack $(STACK)

render: $(OPERATOR_STAMP) ## write every Kubernetes object of STACK as YAML into OUT, validated
	$(RAYGPU) render --stack $(STACK) --out $(OUT)

train: $(STAMP) ## submit the training job to STACK's Ray cluster (ray job submit)
	$(RAYGPU) submit --stack $(STACK) -- python train.py --num-workers 2 --use-gpu --dataset digits

serve: $(STAMP) ## deploy the serving app on STACK for CHECKPOINT (an s3:// URI)
	@test -n "$(CHECKPOINT)" || { echo "error: set CHECKPOINT=s3://.../checkpoint_..." >&2; exit 2; }
	$(RAYGPU) serve --stack $(STACK) --checkpoint $(CHECKPOINT)

destroy: $(OPERATOR_STAMP) ## ordered teardown of STACK (asks first), then a scan for leftovers
	$(RAYGPU) destroy --stack $(STACK) $(ARGS)

orphans: $(OPERATOR_STAMP) ## list what of STACK still exists (ARGS=--delete removes it)
	$(RAYGPU) orphans --stack $(STACK) $(ARGS)

bench: $(STAMP) ## benchmarks: Ray Train vs torchrun, Ray Serve vs FastAPI, start-up, plan, allocator
	@command -v wrk >/dev/null || { apt-get install -y -q wrk || { apt-get update -q && apt-get install -y -q wrk; }; } >/dev/null 2>&1 || \
	  echo "wrk unavailable: the Python load generator will be used (it takes CPU from the servers it measures)"
	$(PY) -m scripts.bench

clean: ## remove caches and rendered output (keeps .venv)
	rm -rf rendered .pytest_cache .ruff_cache demo-output
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
