# raygpu: `make help` lists every target.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.stamp
STACK ?= dev
OUT ?= rendered/$(STACK)
ARGS ?=
PYTEST_ARGS ?=
# pip on this kind of machine prints a warning per package for its local mirrors
PIP_QUIET := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: help venv test test-fast lint fmt demo plan render train serve destroy orphans bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: STACK=$(STACK) (dev|prod), OUT, CHECKPOINT, ARGS, PYTEST_ARGS"

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing requirements.txt into $(VENV) (first time: several minutes, ~7 GB)"
	$(PY) -m pip install -q -r requirements.txt 2>&1 | $(PIP_QUIET)
	@$(PY) -c "import ray, torch, torchvision, pulumi, pulumi_aws, pulumi_kubernetes"
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install the pinned requirements (when missing)

test: $(STAMP) ## run the whole test suite (real local Ray, S3 API on loopback, Pulumi mocks)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## run the tests not marked slow
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff: lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(STAMP) ## ruff: fix and format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: $(STAMP) ## the main job on a local Ray cluster: train (2 workers, digits), serve, check
	$(PY) scripts/demo.py

plan: $(STAMP) ## offline plan with hourly cost for STACK (no credentials, no Pulumi CLI)
	$(PY) scripts/plan.py --stack $(STACK)

render: $(STAMP) ## write every Kubernetes object of STACK as YAML into OUT
	$(PY) scripts/render.py --stack $(STACK) --out $(OUT)

train: $(STAMP) ## submit the training job to STACK's Ray cluster (ray job submit)
	$(PY) scripts/submit.py --stack $(STACK) -- python train.py --num-workers 2 --use-gpu --dataset digits

serve: $(STAMP) ## deploy the serving app on STACK for CHECKPOINT (an s3:// URI)
	@test -n "$(CHECKPOINT)" || { echo "error: set CHECKPOINT=s3://.../checkpoint_..." >&2; exit 2; }
	$(PY) scripts/serve.py --stack $(STACK) --checkpoint $(CHECKPOINT)

destroy: $(STAMP) ## ordered teardown of STACK, then a scan for leftovers
	$(PY) scripts/teardown.py --stack $(STACK) $(ARGS)

orphans: $(STAMP) ## list what of STACK still exists (ARGS=--delete removes it)
	$(PY) scripts/orphans.py --stack $(STACK) $(ARGS)

bench: $(STAMP) ## benchmarks: Ray Train vs torchrun, Ray Serve vs FastAPI, start-up, plan
	$(PY) scripts/bench.py

clean: ## remove caches and rendered output (keeps .venv)
	rm -rf rendered .pytest_cache .ruff_cache demo-output
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
