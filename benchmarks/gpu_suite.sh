#!/usr/bin/env bash
# Validate editbench on a GPU in one command (benchmarks/gpu_suite.py: the stages, the budget, the results).
#
#   bash benchmarks/gpu_suite.sh --out "$OUT" --budget 540          # on the GPU machine, from the repository root
#   bash benchmarks/gpu_suite.sh --out /tmp/suite --device cpu --budget 120 --tests "tests/test_sdedit.py -k nfe"
#
# It installs nothing from the network. The GPU machine has PyTorch; what else the suite needs
# (benchmarks/gpu_requirements.txt) comes as wheels in ./wheels (git-ignored), installed with --no-index
# when a package is missing. Build that folder on a machine with the package index, for the GPU machine's
# Python (add --python-version 3.X --platform manylinux_2_28_x86_64 --only-binary=:all: --target /tmp/t to the
# first command and --python-version/--platform to the last when it differs), leaving out PyTorch and
# what it brings, numpy included (the machine has them; add numpy back if it lacks it; the folder, about
# 46 MB, must stay under the 64 MiB a device run carries):
#
#   pip install --dry-run --ignore-installed --quiet --report /tmp/wheels.json -r benchmarks/gpu_requirements.txt
#   python -c "import json; print('\n'.join(f\"{i['metadata']['name']}=={i['metadata']['version']}\" for i in
#     json.load(open('/tmp/wheels.json'))['install'] if not i['metadata']['name'].lower().startswith(('torch',
#     'nvidia', 'triton', 'cuda', 'sympy', 'mpmath', 'networkx', 'jinja2', 'markupsafe', 'setuptools', 'numpy'))))" > /tmp/pins.txt
#   pip download --no-deps --only-binary=:all: -d wheels -r /tmp/pins.txt
#
# and carry it to the device run (the device tool's carry: ["wheels"]).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python || command -v python3)}
if ! "$PY" -c "import diffusers, transformers, accelerate, pytest, click, yaml" 2>/dev/null; then
  if [ -d wheels ]; then
    "$PY" -m pip install --quiet --no-index --find-links wheels -r benchmarks/gpu_requirements.txt ||
      echo "gpu_suite.sh: installing from ./wheels failed; the suite runs with what is installed" >&2
  else
    echo "gpu_suite.sh: packages are missing and there is no ./wheels folder (see this script's header)" >&2
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
exec "$PY" benchmarks/gpu_suite.py "$@"
