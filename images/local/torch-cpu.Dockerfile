# syntax=docker/dockerfile:1
# Local stand-in for the rollout image's vLLM base (scripts/build-images.sh --local; never pushed): Debian's
# Python 3.11 with torch's CPU build in a venv that is first on PATH, so `python3 -m pip` installs next to torch
# as it does in vllm/vllm-openai. No vLLM: the CPU flavour samples with the transformers engine.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm
FROM ${BASE_IMAGE}
# The host's pip configuration during a local build (scripts/host_pip_config.py); never part of the image.
ARG PIP_CONFIG_FILE
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
COPY images/constraints.txt /tmp/constraints.txt
RUN python3 -m venv /opt/venv \
    && pip install -c /tmp/constraints.txt ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} "torch==2.13.0+cpu" \
    && rm /tmp/constraints.txt
