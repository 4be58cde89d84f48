#!/bin/bash
# Does the ASR stage need dropout? The recipe's steps 10-13 (`voicetone train recipe --dry-run`) with
# every dropout off (1.76x faster on 2 cores: docs/model-report.md, "Training speed"), then step 14 with the
# classifier's dropout put back to 0.1 as the recipe trains it, both held-out sets, and the paired comparison
# against the recipe's own checkpoint. Needs a finished `voicetone train recipe --data $DATA` (default
# data/full). Rerun to resume: finished outputs are skipped and a training step resumes its saved state.
set -e
cd "$(dirname "$0")/.."
V=.venv/bin/voicetone
DATA=${DATA:-data/full}
M=$DATA/synth-b/train.combined.jsonl
D=$DATA/d0
CFG="--set d_model=96 --set frontend_layers=3 --set asr_layers=2 --set decoder_layers=1 --set n_mels=64 --set conv_channels=16 --set ctc_weight=0.5 --set dropout=0"
asr() { # init out steps lr seed window
  [ -f "$2" ] && { echo "done: $2"; return; }
  date; $V train asr --manifest $M --init "$1" --out "$2" $CFG --window-s $6 --steps $3 --batch-size 16 --lr $4 --warmup 100 --seed $5 --train-frontend
}
asr $DATA/s11/asr.pt $D/s14f/asr.pt 4000 0.001 0 8
asr $D/s14f/asr.pt $D/s15/asr.pt 5000 0.0007 1 8
asr $D/s15/asr.pt $D/s16/asr.pt 3000 0.0005 2 8
asr $D/s16/asr.pt $D/s17/asr.pt 4836 0.0005 3 12
if [ ! -f $D/s17/asr-d01.pt ]; then
  .venv/bin/python -c "
import torch
c = torch.load('$D/s17/asr.pt', weights_only=False, map_location='cpu'); c['config']['dropout'] = 0.1
torch.save(c, '$D/s17/asr-d01.pt.tmp')"
  mv $D/s17/asr-d01.pt.tmp $D/s17/asr-d01.pt
fi
[ -f $D/s17h4/classifier.pt ] || $V train classifier --manifest $M --init $D/s17/asr-d01.pt --head conv --heads 4 --out $D/s17h4/classifier.pt --steps 8000 --batch-size 16 --lr 1e-3 --warmup 100 --seed 0 --speech-weight 2 --ema 0.999
[ -f $D/eval/first/report.json ] || $V evaluate $DATA/synth/test.jsonl --model $D/s17h4/classifier.pt --out $D/eval/first
[ -f $D/eval/synth-t/report.json ] || $V evaluate $DATA/synth-t/test.jsonl --model $D/s17h4/classifier.pt --out $D/eval/synth-t
.venv/bin/python bench/compare_reports.py $DATA/eval/recipe/report.json $D/eval/first/report.json
.venv/bin/python bench/compare_reports.py $DATA/eval/recipe-t/report.json $D/eval/synth-t/report.json
date; echo "d0 chain: done"
