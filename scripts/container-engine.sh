#!/usr/bin/env bash
# A container engine on this machine, for `make images-local`, `cure run --runner docker` and
# `make test-containers` (Debian 12; root). Idempotent: each step checks before it acts.
#
#   scripts/container-engine.sh [setup|base|service|all]   (default: all)
#
# setup    apt packages podman, runc, debootstrap (and runsc); /etc/containers/containers.conf.d/50-cure.conf:
#          runc as the default runtime (crun fails here: "cgroups in hybrid mode not supported"), ulimits inside
#          this machine's hard limits (no CAP_SYS_RESOURCE), and a `runsc` runtime that runs gVisor without a
#          network stack (podman's docker API cannot pass runtime flags, so a wrapper adds --network=none).
# base     the base image $CURE_LOCAL_BASE (default localhost/cure-base:bookworm): Debian bookworm with its
#          Python 3.11 from debootstrap, imported with `podman import` (public registries are not reachable
#          here). The root filesystem tarball is cached in $CURE_CACHE_DIR (default ~/.cache/cure/containers).
# service  `podman system service` on $CURE_PODMAN_SOCKET (default /run/podman/podman.sock): the Docker API
#          that kfp.local.DockerRunner speaks (export DOCKER_HOST=unix://$CURE_PODMAN_SOCKET); and a second one on
#          $CURE_SANDBOX_SOCKET (default /run/podman/sandbox.sock) whose containers run under runsc, for the sandbox.
set -euo pipefail

BASE=${CURE_LOCAL_BASE:-localhost/cure-base:bookworm}
CACHE=${CURE_CACHE_DIR:-$HOME/.cache/cure/containers}
SOCKET=${CURE_PODMAN_SOCKET:-/run/podman/podman.sock}
SANDBOX_SOCKET=${CURE_SANDBOX_SOCKET:-/run/podman/sandbox.sock}
MIRROR=${CURE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CONF=/etc/containers/containers.conf.d/50-cure.conf
RUNSC_WRAPPER=/usr/local/bin/cure-runsc

say() { echo "container-engine: $*" >&2; }
die() { say "$*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "needs root (rootful podman; runsc needs root here). Run it as root or with sudo."

setup() {
  local pkgs=(podman runc debootstrap runsc) missing=() p
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  local hard_nofile hard_nproc nofile nproc
  hard_nofile=$(ulimit -Hn); hard_nproc=$(ulimit -Hu)
  nofile=4096; [[ $hard_nofile != unlimited && $hard_nofile -lt 4096 ]] && nofile=$hard_nofile
  nproc=4096; [[ $hard_nproc != unlimited && $hard_nproc -lt 4096 ]] && nproc=$hard_nproc
  install -d /etc/containers/containers.conf.d
  cat >"$RUNSC_WRAPPER.tmp" <<'EOF'
#!/bin/sh
# gVisor for podman (scripts/container-engine.sh): the sandbox gets no network stack at all.
exec /usr/bin/runsc --network=none "$@"
EOF
  chmod 755 "$RUNSC_WRAPPER.tmp"; mv "$RUNSC_WRAPPER.tmp" "$RUNSC_WRAPPER"
  cat >"$CONF.tmp" <<EOF
# Written by scripts/container-engine.sh (cure). Remove this file to undo.
[containers]
default_ulimits = ["nofile=1024:$nofile", "nproc=1024:$nproc"]

[engine]
runtime = "runc"

[engine.runtimes]
runc = ["/usr/sbin/runc"]
runsc = ["$RUNSC_WRAPPER"]
EOF
  mv "$CONF.tmp" "$CONF"
  podman info --format '{{.Host.OCIRuntime.Name}}' | grep -qx runc || die "podman does not use runc after writing $CONF"
  say "engine ready: podman $(podman version --format '{{.Client.Version}}'), runtime runc, runsc wrapper $RUNSC_WRAPPER"
}

base() {
  if podman image exists "$BASE"; then say "base image $BASE exists"; return; fi
  local tarball="$CACHE/cure-base-bookworm.tar"
  mkdir -p "$CACHE"
  if [[ ! -s $tarball ]]; then
    local root; root=$(mktemp -d /var/tmp/cure-base.XXXXXX)
    say "debootstrap bookworm (python3, python3-venv, ca-certificates) into $root"
    nice -n 10 debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
      bookworm "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || { rm -rf "$root"; die "debootstrap failed; see $CACHE/debootstrap.log"; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
    tar --numeric-owner -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  say "importing $tarball as $BASE"
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    "$tarball" "$BASE" >/dev/null
  podman run --rm "$BASE" python3 -c 'import ssl, venv' || die "$BASE has no working python3"
}

serve() {  # serve SOCKET [podman global options]: a Docker API socket, started unless one already answers
  local socket=$1; shift
  if [[ -S $socket ]] && curl -fsS --unix-socket "$socket" http://d/_ping >/dev/null 2>&1; then
    say "podman API already serving on $socket"; return
  fi
  mkdir -p "$(dirname "$socket")"
  rm -f "$socket"
  nohup podman "$@" system service --time=0 "unix://$socket" >"$CACHE/podman-service-$(basename "$socket" .sock).log" 2>&1 &
  local i
  for i in $(seq 1 50); do
    curl -fsS --unix-socket "$socket" http://d/_ping >/dev/null 2>&1 && { say "podman API on $socket (pid $!)"; return; }
    sleep 0.2
  done
  die "podman system service did not answer on $socket; see $CACHE/podman-service-*.log"
}

service() {
  serve "$SOCKET"
  # Sandbox containers: podman's Docker API ignores HostConfig.Runtime, so gVisor gets a socket of its own whose
  # default runtime is runsc (cure.sandbox.container checks that its containers really run on gVisor).
  serve "$SANDBOX_SOCKET" --runtime "$RUNSC_WRAPPER"
  say "export DOCKER_HOST=unix://$SOCKET  (sandbox containers: unix://$SANDBOX_SOCKET)"
}

mkdir -p "$CACHE"
case "${1:-all}" in
  setup) setup ;;
  base) base ;;
  service) service ;;
  all) setup; base; service ;;
  *) die "unknown step '$1'; expected setup, base, service or all" ;;
esac
