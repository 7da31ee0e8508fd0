#!/usr/bin/env bash
# Build and push the pipeline's container images (`make images`), or build them on this machine (`make images-local`).
#
#   scripts/build-images.sh [--no-push] [--dry-run] [--local] [FAMILY ...]
#
# FAMILY is one of cure.images.FAMILIES (default: all). Image names come from cure.images.image_for, so the
# registry and tag are the ones the compiled pipeline references:
#   CURE_IMAGE_REGISTRY  registry/prefix (default ghcr.io/cure-kfp); log in first: docker login <registry>
#   CURE_IMAGE_TAG       tag (default: the package version plus a digest of what the images are built from)
#   DOCKER_BUILD_ARGS    extra arguments for the build command, e.g. "--platform linux/amd64 --pull"
#   CONTAINER_ENGINE     docker (default) or podman
# Build context is the repo root (see .dockerignore); each family builds from images/<family>/Dockerfile.
# --dry-run prints the build commands and exits without needing an engine.
# --local builds with podman on this machine, without pushing: the engine and a Debian base image come from
#   scripts/container-engine.sh, the base images become that base (rollout and train in a CPU flavour, see their
#   Dockerfiles), and the host's pip configuration is forwarded into the build (scripts/host_pip_config.py).
#   CURE_LOCAL_BASE names the base (default localhost/cure-base:bookworm).
set -euo pipefail
cd "$(dirname "$0")/.."

push=1
dry_run=0
local_build=0
families=()
for arg in "$@"; do
  case "$arg" in
    --no-push) push=0 ;;
    --dry-run) dry_run=1 ;;
    --local) local_build=1; push=0 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

ENGINE=${CONTAINER_ENGINE:-docker}
((local_build)) && ENGINE=podman
if ((!dry_run && local_build)); then
  bash scripts/container-engine.sh setup
  bash scripts/container-engine.sh base
elif ((!dry_run)); then
  if ! command -v "$ENGINE" >/dev/null 2>&1; then
    echo "build-images: the $ENGINE CLI is not installed. Install Docker (or a compatible engine) on a machine" \
         "that can build images, or run with --dry-run to see the commands." >&2
    exit 1
  fi
  if ! docker_err=$("$ENGINE" info 2>&1 >/dev/null); then
    echo "build-images: no Docker engine is reachable (docker info failed: ${docker_err##*$'\n'})." >&2
    echo "build-images: start the Docker daemon or point DOCKER_HOST at one; this script needs an engine to build." >&2
    exit 1
  fi
fi

read -r -a extra <<<"${DOCKER_BUILD_ARGS:-}"
registry=${image_of[cpu]%/cure-cpu:*}
tag=${image_of[cpu]##*:}
common=(--build-arg "CURE_IMAGE_REGISTRY=$registry" --build-arg "CURE_IMAGE_TAG=$tag")
if ((local_build)); then
  base=${CURE_LOCAL_BASE:-localhost/cure-base:bookworm}
  # A build that cannot resolve download.pytorch.org takes torch from the indexes pip is configured with.
  torch_index=https://download.pytorch.org/whl/cpu
  getent hosts download.pytorch.org >/dev/null 2>&1 || torch_index=""
  pipdir=$(mktemp -d /tmp/cure-pip-forward.XXXXXX)
  trap 'rm -rf "$pipdir"' EXIT
  if ((dry_run)); then
    pipfwd=("--volume=$pipdir:/mnt/host-pip/conf:ro" "--build-arg=PIP_CONFIG_FILE=/mnt/host-pip/conf/pip.conf")
  else
    mapfile -t pipfwd < <("$PYTHON" scripts/host_pip_config.py "$pipdir")
  fi
  read -r -a ulimits <<<"${CURE_BUILD_ULIMITS:---ulimit nofile=1024:4096 --ulimit nproc=1024:4096}"
  common+=(--network host --runtime /usr/sbin/runc "${ulimits[@]}" "${pipfwd[@]}" --build-arg "TORCH_INDEX_URL=$torch_index")
  torch_base=localhost/cure-torch-cpu:2.13.0
fi

build() {
  local family=$1 ref=$2 args=()
  if ((local_build)); then
    case "$family" in
      cpu|sandbox) args=(--build-arg "BASE_IMAGE=$base") ;;
      rollout)
        run nice -n 10 "$ENGINE" build "${extra[@]}" "${common[@]}" --build-arg "BASE_IMAGE=$base" \
          --file images/local/torch-cpu.Dockerfile --tag "$torch_base" .
        args=(--build-arg "BASE_IMAGE=$torch_base" --build-arg "EXTRA_PACKAGES=pydantic") ;;
      train)
        args=(--build-arg "BUILDER_BASE=$base" --build-arg "RUNTIME_BASE=$base"
              --build-arg "TORCH_SPEC=torch==2.13.0+cpu" --build-arg "DS_BUILD_ENV=DS_BUILD_OPS=0") ;;
    esac
    run nice -n 10 "$ENGINE" build "${extra[@]}" "${common[@]}" "${args[@]}" --file "images/$family/Dockerfile" --tag "$ref" .
  else
    run "$ENGINE" build "${extra[@]}" "${common[@]}" --file "images/$family/Dockerfile" --tag "$ref" .
  fi
}

for family in "${families[@]}"; do
  ref=${image_of[$family]}
  start=$SECONDS
  build "$family" "$ref"
  ((dry_run)) || echo "build-images: $family built in $((SECONDS - start)) s: $ref"
  if ((push)); then
    run "$ENGINE" push "$ref"
  fi
done
if ((local_build && !dry_run)); then
  # Images of earlier code: tags follow the code, so they are never used again (CURE_KEEP_OLD_IMAGES=1 keeps them).
  # No `image prune`: the untagged builder stages it would remove are the layer cache of the next build.
  if [[ ${CURE_KEEP_OLD_IMAGES:-0} != 1 ]]; then
    "$ENGINE" images --format '{{.Repository}}:{{.Tag}}' | grep -E "^$registry/cure-($(IFS='|'; echo "${all_families[*]}")):" \
      | grep -v ":$tag\$" | xargs -r "$ENGINE" rmi >/dev/null || true
  fi
fi
echo "build-images: done: ${families[*]}"
