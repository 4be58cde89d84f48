#!/usr/bin/env bash
# The test suite (unit + integration against the embedded tansu broker).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${VIRTUAL_ENV:-}" ] || . .venv/bin/activate
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
python -m pytest -q -p no:cacheprovider "$@"
