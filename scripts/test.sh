#!/usr/bin/env bash
# The test suite (unit + integration against the embedded tansu broker). Every skip prints its reason
# (-rs): only what a machine may truly lack (a GPU, an optional extra) is skipped; a missing dependency fails.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${VIRTUAL_ENV:-}" ] || . .venv/bin/activate
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
python -m pytest -q -rs -p no:cacheprovider "$@"
