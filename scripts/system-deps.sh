#!/usr/bin/env bash
# System packages the project needs (Debian). Idempotent; runs as root (CI and dev machines) or via sudo.
set -euo pipefail
PKGS=(g++ make)
# gVisor for the sandbox (execute stage).
PKGS+=(runsc)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
  echo "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
