#!/usr/bin/env bash
# Create .venv (if missing) and install editbench with its test, Ray and tracker (MLflow, W&B) extras, so
# the default tests cover --log too (the trackers add about 30 s to an install beside editbench's own packages). Idempotent: a second
# run only checks what is installed. Override the torch pair with TORCH_SPEC, e.g.
# TORCH_SPEC="torch==2.9.1 torchvision==0.24.1" on aarch64.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# torch and torchvision must come as a matching pair: install them first, then the rest.
.venv/bin/python -m pip install -q --disable-pip-version-check ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,ray,mlflow,wandb]"
# The ImageReward reference test runs the authors' package; it pins timm==0.6.13 (open-clip-torch, which HPS
# uses, needs timm>=1.0.17) and fairscale, which its inference does not use: install it without its dependencies.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "image-reward==1.5"
