#!/usr/bin/env bash
# CI's container checks (.ci/run, after `make test`): the sandbox image under runsc against the adversarial suite,
# then a 1-round smoke run with every component in its image. Needs root and apt (scripts/container-engine.sh).
#
# Caches, kept between runs on the same machine and safe to keep: podman's layer store (/var/lib/containers: a
# layer is reused only when its instruction and inputs are unchanged, and image tags follow the code), the Debian
# base tarball (~/.cache/cure/containers; debootstrap verifies the archive's signatures when it is made), and the
# offline tiny model (~/.cache/cure, rebuilt when its code changes). pip downloads come from the machine's own
# package configuration, forwarded read-only.
#   CURE_CI_SMOKE_BASE_MODEL   starting model of the container smoke (default tiny:0:40: a 40-step tiny model,
#                              about 1 minute to build, instead of the 2,000-step one; the pipeline is the same)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export DOCKER_HOST=unix:///run/podman/podman.sock
export PYTHONPATH=$PWD/src:$PWD
t0=$SECONDS
bash scripts/container-engine.sh
bash scripts/build-images.sh --local sandbox
echo "ci-containers: engine and sandbox image ready after $((SECONDS - t0)) s"
CURE_TEST_CONTAINERS=1 "$PY" -m pytest -q tests/test_containers.py -k "not smoke and not own_tag"
echo "ci-containers: sandbox checks done after $((SECONDS - t0)) s"
bash scripts/build-images.sh --local
echo "ci-containers: all images ready after $((SECONDS - t0)) s"
CURE_TEST_CONTAINERS=1 "$PY" -m pytest -q tests/test_containers.py -k own_tag
out=$(mktemp -d /tmp/cure-ci-smoke.XXXXXX)
"$(dirname "$PY")/cure" run --preset smoke --runner docker --base-model "${CURE_CI_SMOKE_BASE_MODEL:-tiny:0:40}" --out "$out"
test -s "$out/history.json" && test -s "$out/report/report.html"
rm -rf "$out"
echo "ci-containers: done in $((SECONDS - t0)) s"
