#!/usr/bin/env bash
# Fine-tuning a real model with targeted augmentation (issue 10, item 5): the released SFace vs SFace
# fine-tuned on renders with attr=head_angle and with attr=none (the control), same readouts, and
# verification on the same held-out synthetic pairs before and after.
#   bash docs/sface_finetune/run.sh [WORK_DIR]      (needs the pretrained extra; CPU, about 40 min)
set -euo pipefail
WORK=${1:-runs/sface_finetune}
DOCS=$(dirname "$0")
PROBE=(probe.n_identities=16 "cache_dir=$WORK/embeddings")
time_step() { local start=$SECONDS; "$@"; echo "[$((SECONDS - start)) s] $*" | tee -a "$WORK/timings.txt"; }
mkdir -p "$WORK"

for attr in head_angle none; do
  time_step python train.py experiment=finetune_sface attr=$attr seed=0 invariance=off logger=csv \
    hydra.run.dir="$WORK/$attr"
done
time_step python "$DOCS/write_pairs.py" "$WORK/pairs" experiment=finetune_sface attr=head_angle data.val_pairs=1000

BINS="bins=[$WORK/pairs/ordinary.bin,$WORK/pairs/vary_head_angle.bin]"
time_step python evaluate.py model=sface data.image_size=112 "${PROBE[@]}" output_dir="$WORK/eval/sface"
time_step python evaluate.py analysis=verification model=sface data.image_size=112 "$BINS" \
  output_dir="$WORK/eval/sface_verification"
for attr in head_angle none; do
  time_step python evaluate.py checkpoint="$WORK/$attr/checkpoints/last.ckpt" "${PROBE[@]}" \
    output_dir="$WORK/eval/$attr"
  time_step python evaluate.py analysis=verification checkpoint="$WORK/$attr/checkpoints/last.ckpt" "$BINS" \
    output_dir="$WORK/eval/${attr}_verification"
done
ls "$WORK/embeddings"
