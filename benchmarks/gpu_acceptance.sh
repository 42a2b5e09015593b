#!/usr/bin/env bash
# The GPU path end to end in one command, from anywhere in the repository:
#   bash benchmarks/gpu_acceptance.sh            # GPU run (configs/gpu_acceptance.yaml), under 8 minutes
#   bash benchmarks/gpu_acceptance.sh --smoke    # the same stages at smoke size (also the default without a GPU)
# Options go to benchmarks/gpu_acceptance.py (--help). It prints one Markdown table and exits 1 when a
# stage fails. Python, first that works:
#   1. $MEDTL_PYTHON;
#   2. .venv/bin/python (make setup);
#   3. python3, when it imports every package the run needs (torch, snakemake, ultralytics, sam2, ...);
#   4. python3 with torch (a GPU image): a venv .venv that sees python3's packages
#      (--system-site-packages), into which the lines of requirements.txt whose package python3 lacks
#      are installed (the image's torch, numpy, ... stay as they are), from $MEDTL_WHEELS (a folder of
#      wheels, no network: pip --no-index --find-links) or else from PyPI;
#   5. make setup (needs PyPI).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NEEDED="import torch, torchvision, timm, snakemake, ultralytics, segment_anything, sam2
import pandas, pyarrow, sklearn, scipy, statsmodels, matplotlib, jsonschema, tabulate, yaml"

if [ -n "${MEDTL_PYTHON:-}" ]; then
    PY=$MEDTL_PYTHON
elif [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
elif command -v python3 >/dev/null && python3 -c "$NEEDED" 2>/dev/null; then
    PY=python3
elif command -v python3 >/dev/null && python3 -c "import torch" 2>/dev/null; then
    echo "[acceptance] python3 has torch but not everything else: a venv .venv over it, the rest from" \
         "${MEDTL_WHEELS:-PyPI}" >&2
    python3 -m venv --system-site-packages .venv
    .venv/bin/python -c '
import importlib.metadata as md, re
for line in open("requirements.txt"):
    line = line.split("#")[0].strip()
    try:
        line and md.version(re.split(r"[=<>!~ ;\[]", line)[0])
    except md.PackageNotFoundError:
        print(line)' > .venv/requirements-missing.txt
    echo "[acceptance] installing: $(tr '\n' ' ' < .venv/requirements-missing.txt)" >&2
    PIP=(.venv/bin/python -m pip install --quiet)
    if [ -n "${MEDTL_WHEELS:-}" ]; then PIP+=(--no-index --find-links "$MEDTL_WHEELS"); fi
    # sam2 is published as source only: built against the torch that is there, without its CUDA extension
    SAM2_BUILD_CUDA=0 "${PIP[@]}" --no-build-isolation -r .venv/requirements-missing.txt
    PY=.venv/bin/python
else
    make setup >&2
    PY=.venv/bin/python
fi
exec "$PY" benchmarks/gpu_acceptance.py "$@"
