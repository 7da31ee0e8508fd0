#!/usr/bin/env bash
# Build and push the pipeline's container images (`make images`).
#
#   scripts/build-images.sh [--no-push] [--dry-run] [FAMILY ...]
#
# FAMILY is one of cure.images.FAMILIES (default: all). Image names come from cure.images.image_for, so the
# registry and tag are the ones the compiled pipeline references:
#   CURE_IMAGE_REGISTRY  registry/prefix (default ghcr.io/cure-kfp); log in first: docker login <registry>
#   CURE_IMAGE_TAG       tag (default: the cure package version in pyproject.toml)
#   DOCKER_BUILD_ARGS    extra arguments for `docker build`, e.g. "--platform linux/amd64 --pull"
# Build context is the repo root (see .dockerignore); each family builds from images/<family>/Dockerfile.
# --dry-run prints the docker commands and exits without needing Docker.
set -euo pipefail
cd "$(dirname "$0")/.."

push=1
dry_run=0
families=()
for arg in "$@"; do
  case "$arg" in
    --no-push) push=0 ;;
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build-images: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) families+=("$arg") ;;
  esac
done

PYTHON=${PYTHON:-}
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# cure.images uses only the standard library: importable from src/ without installing the package.
if ! listing=$(PYTHONPATH=src "$PYTHON" -m cure.images); then
  echo "build-images: could not resolve image names (see the error above)" >&2
  exit 1
fi

declare -A image_of=()
all_families=()
while read -r family ref; do
  image_of[$family]=$ref
  all_families+=("$family")
done <<<"$listing"
((${#families[@]})) || families=("${all_families[@]}")
for family in "${families[@]}"; do
  if [[ -z "${image_of[$family]:-}" ]]; then
    echo "build-images: unknown image family '$family'; expected one of: ${all_families[*]}" >&2
    exit 2
  fi
  if [[ ! -f "images/$family/Dockerfile" ]]; then
    echo "build-images: images/$family/Dockerfile is missing" >&2
    exit 1
  fi
done

run() {
  echo "+ $*"
  ((dry_run)) || "$@"
}

if ((!dry_run)); then
  if ! command -v docker >/dev/null 2>&1; then
    echo "build-images: the docker CLI is not installed. Install Docker (or a compatible engine) on a machine" \
         "that can build images, or run with --dry-run to see the commands." >&2
    exit 1
  fi
  if ! docker_err=$(docker info 2>&1 >/dev/null); then
    echo "build-images: no Docker engine is reachable (docker info failed: ${docker_err##*$'\n'})." >&2
    echo "build-images: start the Docker daemon or point DOCKER_HOST at one; this script needs an engine to build." >&2
    exit 1
  fi
fi

read -r -a extra <<<"${DOCKER_BUILD_ARGS:-}"
for family in "${families[@]}"; do
  ref=${image_of[$family]}
  run docker build "${extra[@]}" --file "images/$family/Dockerfile" --tag "$ref" .
  if ((push)); then
    run docker push "$ref"
  fi
done
echo "build-images: done: ${families[*]}"
