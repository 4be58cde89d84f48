#!/usr/bin/env bash
# Set up voicetone on a fresh machine: system speech tools, a virtual
# environment, the package with its test extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=()
for bin in espeak-ng flite text2wave sox; do command -v "$bin" >/dev/null 2>&1 || need_apt+=("$bin"); done
# jemalloc: the allocator the deploy images run the worker on (bench/bench_e2e.py uses it where installed)
ldconfig -p 2>/dev/null | grep -q libjemalloc.so.2 || need_apt+=(libjemalloc2)
if [ ${#need_apt[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing ${need_apt[*]} and no apt-get to install them: install espeak-ng, flite, festival" \
         "(with voices kallpc16k, kdlpc16k, us-slt-hts), sox and libjemalloc2, then run this again" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq || echo "warning: apt-get update failed; trying to install from the current lists" >&2
  if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng flite festival festvox-kallpc16k \
       festvox-kdlpc16k festvox-us-slt-hts sox libjemalloc2 >/dev/null; then
    echo "error: could not install the speech tools and jemalloc (espeak-ng flite festival sox libjemalloc2):" \
         "the corpus tools and their tests need them; see the apt-get output above" >&2
    exit 1
  fi
fi
for bin in espeak-ng flite text2wave sox; do
  command -v "$bin" >/dev/null 2>&1 || { echo "error: $bin is still missing after installing the speech tools" >&2; exit 1; }
done
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: a CPU build (anything else pulls gigabytes of CUDA)
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
