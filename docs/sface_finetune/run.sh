#!/usr/bin/env bash
# Fine-tuning a real model with targeted augmentation (issue 10, item 5): the released SFace vs SFace
# fine-tuned on renders with attr=head_angle and with attr=none (the control), the same invariance readouts,
# and verification on the same held-out synthetic pairs before and after.
#   bash docs/sface_finetune/run.sh [WORK_DIR]      (needs the pretrained extra; 2-core CPU, about 35 min)
# The two arms (and their evaluations) run side by side, one torch thread each. A step whose output exists is
# skipped, so re-running continues an interrupted run.
set -euo pipefail
WORK=${1:-runs/sface_finetune}
DOCS=$(dirname "$0")
PROBE=(probe.n_identities=16 "cache_dir=$WORK/embeddings")
BINS="bins=[$WORK/pairs/ordinary.bin,$WORK/pairs/vary_head_angle.bin]"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$WORK"
step() {  # step OUTPUT COMMAND...: run COMMAND unless OUTPUT exists; log its wall time
  local output=$1 start=$SECONDS; shift
  [[ -e $output ]] && return 0
  local log=${output#"$WORK"/}; mkdir -p "$WORK/logs"; "$@" > "$WORK/logs/${log//\//_}.log" 2>&1
  echo "[$((SECONDS - start)) s] $*" >> "$WORK/timings.txt"
}

for attr in head_angle none; do
  step "$WORK/$attr/summary.json" python train.py experiment=finetune_sface attr=$attr seed=0 invariance=off \
    logger=csv hydra.run.dir="$WORK/$attr" &
done
step "$WORK/pairs/vary_head_angle.bin" python "$DOCS/write_pairs.py" "$WORK/pairs" experiment=finetune_sface \
  attr=head_angle data.val_pairs=1000
wait

step "$WORK/eval/sface/report.md" python evaluate.py model=sface data.image_size=112 "${PROBE[@]}" \
  output_dir="$WORK/eval/sface" &
step "$WORK/eval/sface_verification/report.md" python evaluate.py analysis=verification model=sface \
  data.image_size=112 "$BINS" output_dir="$WORK/eval/sface_verification" &
wait
for attr in head_angle none; do
  ( step "$WORK/eval/$attr/report.md" python evaluate.py checkpoint="$WORK/$attr/checkpoints/last.ckpt" \
      "${PROBE[@]}" output_dir="$WORK/eval/$attr"
    step "$WORK/eval/${attr}_verification/report.md" python evaluate.py analysis=verification \
      checkpoint="$WORK/$attr/checkpoints/last.ckpt" "$BINS" output_dir="$WORK/eval/${attr}_verification" ) &
done
wait
# paired tests over the probe identities, fine-tuned arm against the control fine-tune (Holm over the targeted
# attribute and, separately, the side effects); the probe embeddings come from the cache
step "$WORK/eval/compare/report.md" python evaluate.py \
  "checkpoints=[$WORK/head_angle/checkpoints/last.ckpt,$WORK/none/checkpoints/last.ckpt]" control=none/last \
  "${PROBE[@]}" output_dir="$WORK/eval/compare"
