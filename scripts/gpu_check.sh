#!/bin/bash
# The training package's CUDA paths, on a GPU machine whose Python has the project's packages
# (requirements.txt's torch aside: any CUDA build of torch 2.11+). CI has no GPU, so this is run by hand:
#   1. the quick-scale recipe with its response stages (sft-response, grpo) on CUDA, end to end;
#   2. the shipped model evaluated on CUDA and on the CPU over the same held-out frames: cIoU of each
#      and how many answers (entities and boxes) are identical.
# Usage: scripts/gpu_check.sh HELDOUT_DATA [OUT_DIR] [IMAGES]
#   HELDOUT_DATA: e.g. runs/tiny-synth/heldout (written by `python -m training recipe tiny-synth-eval`)
set -o pipefail
DATA=${1:?usage: scripts/gpu_check.sh HELDOUT_DATA [OUT_DIR] [IMAGES]}
OUT_DIR=${2:-out/gpu_check}
IMAGES=${3:-12}
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-57}
mkdir -p "$OUT_DIR"
$PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch: nothing to check')" || exit 2
RUN=$(mktemp -d)
trap 'rm -rf "$RUN"' EXIT
T0=$(date +%s)
$PY -m training recipe tiny-synth --scale quick --out "$RUN/run" --model-out "$RUN/m" --device cuda > "$OUT_DIR/recipe.log" 2>&1
rc=$?
echo "quick recipe, response stages on cuda: exit $rc in $(( $(date +%s) - T0 )) s (log: $OUT_DIR/recipe.log)"
[ $rc -eq 0 ] || exit 1
for d in cuda cpu; do
  T0=$(date +%s)
  $PY -m training eval --model models/earl-tiny-synth --data "$DATA" --split test --image-limit "$IMAGES" --device $d \
      --out "$OUT_DIR/shipped_$d.json" > "$OUT_DIR/shipped_$d.log" 2>&1 || { echo "eval on $d failed: $OUT_DIR/shipped_$d.log"; exit 1; }
  echo "shipped model on $d: $(( $(date +%s) - T0 )) s"
done
$PY - "$OUT_DIR" <<'PY'
import json, sys
a, b = (json.load(open(f"{sys.argv[1]}/shipped_{d}.json")) for d in ("cuda", "cpu"))
same = sum((x["pred"], x["pred_boxes"]) == (y["pred"], y["pred_boxes"]) for x, y in zip(a["samples"], b["samples"]))
coords = [abs(u - v) for x, y in zip(a["samples"], b["samples"]) if x["pred"] == y["pred"]
          for p, q in zip(x["pred_boxes"], y["pred_boxes"]) for u, v in zip(p, q)]
print(f"cIoU cuda {100 * a['cIoU']:.2f} cpu {100 * b['cIoU']:.2f} over {a['n']} queries; identical answers {same} of "
      f"{len(a['samples'])}; box coordinates (same entities) differing by 0 / 1 / more px: "
      f"{sum(c == 0 for c in coords)} / {sum(c == 1 for c in coords)} / {sum(c > 1 for c in coords)}")
PY
