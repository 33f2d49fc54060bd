#!/usr/bin/env bash
# One prepared GPU session: prove the CUDA path end to end and measure training speed.
#
#   bash benchmarks/gpu_check.sh            # on a CUDA machine, from the repo root
#   DEVICE=cpu SMALL=1 bash benchmarks/gpu_check.sh   # dry run of the same steps on a CPU
#
# Needs torch, torchvision, typer, rich, numpy, pillow and pyyaml importable; the package is
# used from src/ without installing. Logs and JSON results go to $OUT (default ./gpu-out).
set -euo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$PWD/gpu-out}
WORK=${WORK:-/tmp/sq-gpu}
SMALL=${SMALL:-0}
mkdir -p "$OUT" "$WORK"
exec > >(tee "$OUT/log.txt") 2>&1
sq() { python3 -m stylequery "$@"; }
step() { echo; echo "=== $* ($(date +%T))"; }

if [ "$SMALL" = 1 ]; then
  PRODUCTS=60 SIZE=64 ITERS=6 EVAL=3 SPEED_ARGS="--image-size 64 --iterations 2 --warmup 1 --repeats 1"
else
  PRODUCTS=3000 SIZE=224 ITERS=1500 EVAL=500 SPEED_ARGS=""
fi

step "machine"
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

step "synth + prepare with a ${SIZE}px cache"
sq synth "$WORK/cat" --products "$PRODUCTS" --image-size 256 --overwrite
sq prepare --root "$WORK/cat" --image-cache "$SIZE"

COMMON=(--set "data.root=$WORK/cat" --set "data.image_size=$SIZE" --set data.num_workers=6
        --device "$DEVICE" --out "$WORK/runs")

step "train: full ResNet18 + tirg, bf16 autocast, channels_last, random init"
sq train "${COMMON[@]}" --set model.composer=tirg --set train.precision=bf16 \
  --set "train.iterations=$ITERS" --set "train.eval_every=$EVAL" --set train.name=tirg-bf16

if [ "$DEVICE" = cuda ]; then
  step "train: fp16 with a grad scaler (short)"
  sq train "${COMMON[@]}" --set model.composer=concat --set train.precision=fp16 \
    --set train.iterations=50 --set train.eval_every=0 --set train.name=concat-fp16
  step "train: DDP under torchrun, nccl, one process (short)"
  python3 -m torch.distributed.run --standalone --nproc_per_node 1 -m stylequery train "${COMMON[@]}" \
    --set train.iterations=30 --set train.eval_every=0 --set train.name=ddp
fi

BEST="$WORK/runs/tirg-bf16/weights/best.pt"
step "evaluate, embed, query on $DEVICE"
sq evaluate "$BEST" --device "$DEVICE" --breakdown --out "$OUT/metrics-tirg-bf16.json"
sq embed "$WORK/cat/prepared/pants" --checkpoint "$BEST" --device "$DEVICE" --workers 6
IMG=$(find "$WORK/cat/women" -name '*.jpeg' | sort | sed -n 1p)
sq query "$IMG" --change black:green --checkpoint "$BEST" --device "$DEVICE" --k 10 \
  --save "$OUT/gpu-results.png"
cp "$WORK/runs/tirg-bf16/curves.png" "$OUT/gpu-curves.png"
cp "$WORK/runs/tirg-bf16/metrics.csv" "$OUT/gpu-metrics.csv"

step "training speed: images/s through the CNN (2 x batch per iteration), median of logged windows"
SPEED_ITERS=$([ "$SMALL" = 1 ] && echo 4 || echo 160)
speed() {  # name, then overrides
  local name=$1; shift
  sq train "${COMMON[@]}" --set train.iterations="$SPEED_ITERS" --set train.eval_every=0 \
    --set train.log_every=$((SPEED_ITERS / 8 > 0 ? SPEED_ITERS / 8 : 1)) \
    --set train.name="speed-$name" --set eval.max_queries=50 "$@" >> "$OUT/speed.log" 2>&1
  python3 - "$WORK/runs/speed-$name/metrics.csv" "$name" "$OUT/train_speed.jsonl" <<'PY'
import csv, json, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["images_per_s"]]
speeds = [float(r["images_per_s"]) for r in rows[1:]] or [float(rows[0]["images_per_s"])]
line = {"variant": sys.argv[2], "images_per_s": statistics.median(speeds), "windows": len(speeds)}
print(json.dumps(line)); open(sys.argv[3], "a").write(json.dumps(line) + "\n")
PY
}
rm -f "$OUT/train_speed.jsonl"
speed concat-fp32 --set model.composer=concat --set train.precision=fp32
speed concat-bf16 --set model.composer=concat --set train.precision=bf16
speed tirg-fp32 --set model.composer=tirg --set train.precision=fp32
speed tirg-bf16 --set model.composer=tirg --set train.precision=bf16
speed tirg-bf16-jpeg --set model.composer=tirg --set train.precision=bf16 --set data.use_image_cache=false
speed tirg-bf16-frozen --set model.composer=tirg --set train.precision=bf16 --set model.freeze_image_encoder=true
step "done"
