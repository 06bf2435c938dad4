# dbtier front door. Every target bootstraps what it needs (`make setup` is idempotent).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
BIN       := $(CURDIR)/$(VENV)/bin
STAMP     := $(VENV)/.installed
SYSSTAMP  := .run/.system-deps
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help setup system-deps containers lint checkov test test-quick test-molecule test-terraform demo demo-down bench bench-quick bench-archive docs-architecture lock clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(SYSSTAMP): scripts/install-system-deps.sh
	@mkdir -p .run
	bash scripts/install-system-deps.sh
	@touch $@

$(STAMP): requirements/lock.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel
	$(PY) -m pip install -q -r requirements/lock.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

system-deps: $(SYSSTAMP)  ## install the Debian packages the tests need

setup: $(SYSSTAMP) $(STAMP)  ## create .venv with the pinned dependencies and install Debian packages

containers: setup  ## podman config and the base image localhost/dbtier-base:bookworm (built once)
	bash scripts/bootstrap-containers.sh

lint: setup  ## ruff, yamllint, ansible-lint
	$(BIN)/ruff check src tests library scripts molecule inventories benchmarks
	$(BIN)/ruff format --check src tests library scripts molecule inventories benchmarks
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint -q

checkov: setup  ## checkov on terraform/ (its own venv under .run, see scripts/terraform-env.sh)
	bash scripts/terraform-env.sh checkov --directory terraform --framework terraform --skip-download --quiet --compact

test: lint  ## lint, then the whole pytest suite (Molecule and Terraform included)
	$(BIN)/pytest

test-quick: setup  ## unit and integration tests without Molecule and Terraform apply
	$(BIN)/pytest -m "not molecule and not terraform_apply"

test-molecule: setup  ## the Molecule scenarios (real containers with systemd; several minutes)
	$(BIN)/pytest -m molecule

test-terraform: setup  ## Terraform: static checks, inventory script, apply against moto_server
	$(BIN)/pytest tests/terraform

bench: setup  ## every speed claim side by side (scale 2.5 ≈ 2.5 GB, 3 reps): bench/results/, docs/BENCHMARKS.md
	$(PY) -m benchmarks $(BENCH_ARGS)

bench-quick: setup  ## make bench at a tiny scale, 1 rep, into a temporary directory (smoke test, also in make test)
	$(PY) -m benchmarks --quick $(BENCH_ARGS)

bench-archive: setup  ## dbtier archive rows/s on 5 M log rows, insert p99 idle vs archiving (not in bench)
	$(PY) benchmarks/archive_throughput.py

demo: setup  ## local stack in a podman pod: site.yml, sample data, summary (rerun: no change)
	bash scripts/demo.sh up

demo-down: setup  ## remove the local stack (containers, pod, volumes)
	bash scripts/demo.sh down

docs-architecture: $(SYSSTAMP)  ## render docs/architecture/tier.dot into tier.svg (Graphviz)
	bash scripts/render-architecture.sh

lock:  ## re-resolve requirements/dev.in into requirements/lock.txt
	rm -rf .run/lockvenv && python3 -m venv .run/lockvenv
	.run/lockvenv/bin/pip install -q --upgrade pip && .run/lockvenv/bin/pip install -q -r requirements/dev.in
	.run/lockvenv/bin/pip freeze --exclude-editable > requirements/lock.txt

clean:  ## remove the venv and run state (stops the demo first)
	-bash scripts/demo.sh down
	rm -rf $(VENV) .run
