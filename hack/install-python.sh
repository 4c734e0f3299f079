#!/usr/bin/env bash
# Create the virtualenv and install kuberank editable with every extra, pinned by constraints.txt.
# pip's cache (~/.cache/pip) is kept between runs: torch from PyPI is several GB.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv with $($python --version)"
  "$python" -m venv "$venv"
fi
echo "==> pip install -e .[dev] (first run downloads torch and CUDA libraries: several minutes)"
"$venv/bin/python" -m pip install --progress-bar off -q --upgrade pip
"$venv/bin/python" -m pip install --progress-bar off -c constraints.txt -e '.[dev]' \
  | { grep -E '^(Collecting|Successfully)' || true; }
echo "==> python environment ready"
