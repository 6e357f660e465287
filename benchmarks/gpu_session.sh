#!/usr/bin/env bash
# One prepared run for a working session that is lent a GPU machine (.library/device):
# the machine is lent for minutes, starts bare, reaches no network and receives only the
# working tree plus carried folders (64 MiB in all), so everything it needs is packed
# here first and the whole check runs as one command there.
#
# Here (CPU), once:   bash benchmarks/gpu_session.sh prepare
#     packs ../shared's T91 + BSD200 (as lossless WebP: 59 MB of PNG -> ~40 MB) and the
#     Set5/Set14 validation HR images into the ignored .traindata/ (same layout as ../shared),
#     and fails if the tree and the pack together are over the 64 MiB that travel.
# There, as one device call with carry [".traindata"]:
#     bash benchmarks/gpu_session.sh run [MODEL MINUTES [key=value ...]]
#     1. GPU, driver and torch versions;
#     2. benchmarks/bench_train.py: edsr_baseline and rcan x4 at batch 16, LR patch 48, the
#        trainer's default step (bf16 autocast, channels_last) against plain fp32 NCHW in
#        one process: it/s, images/s, data-wait share, MFU;
#     3. benchmarks/bench_inference.py speed table on the GPU (random weights, the large models);
#     4. optionally trains MODEL (a recipe in configs/, x4) for MINUTES of wall time into
#        $OUT/run; its final weights, logs and validation scores come back (files over
#        15 MiB are split: rejoin with `cat final.safetensors.part-* > final.safetensors`).
#     Everything printed is also saved as $OUT/gpu_session.log.
# Dry run here (tiny settings, CPU):  OUT=/tmp/gpu BENCH_ARGS="--steps 2 --warmup 1 --batch 2
#     --patch 16 --models espcn" INFER_ARGS="--device cpu --models espcn --size 64 --repeat 1"
#     bash benchmarks/gpu_session.sh run espcn 0.5 train.steps=20
set -euo pipefail
cd "$(dirname "$0")/.."
PACK="${GPU_PACK_DIR:-.traindata}"  # ignored by .gitignore; GPU_PACK_DIR for tests

prepare() {
    local shared="${SR_SHARED_DIR:-../shared}"
    [ -d "$shared/datasets/train" ] || { echo "no $shared/datasets/train: set SR_SHARED_DIR" >&2; exit 2; }
    rm -rf "$PACK.tmp" && mkdir -p "$PACK.tmp/datasets/benchmarks"
    python - "$shared/datasets/train" "$PACK.tmp/datasets/train" <<'EOF'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for folder in ("T91", "BSD200"):
    out = dst / folder
    out.mkdir(parents=True)
    for path in sorted((src / folder).iterdir()):
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        target = out / (path.stem + ".webp")
        rgb.save(target, "WEBP", lossless=True, quality=100, method=4)
        with Image.open(target) as back:  # lossless means bit-exact; check it
            if not np.array_equal(np.asarray(back.convert("RGB")), np.asarray(rgb)):
                sys.exit(f"WebP round trip changed {path}")
EOF
    # HR only: validation makes the LR with the MATLAB-exact bicubic, as for B100/Urban100
    # (the same pixels as the MATLAB LR files), which saves 3 MB of the 64 MiB.
    for name in Set5 Set14; do
        mkdir -p "$PACK.tmp/datasets/benchmarks/$name"
        cp -r "$shared/datasets/benchmarks/$name/HR" "$PACK.tmp/datasets/benchmarks/$name/"
    done
    rm -rf "$PACK" && mv "$PACK.tmp" "$PACK"
    local tree packed limit="${GPU_TRAVEL_LIMIT:-67108864}"
    tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -n 1 | cut -f1)
    packed=$(du -sb "$PACK" | cut -f1)
    echo "packed $packed bytes in $PACK; working tree $tree bytes;" \
         "together $(( (packed + tree) / 1048576 )) MiB of the 64 MiB that travel"
    if (( packed + tree > limit )); then
        echo "too big to travel: $(( packed + tree - limit )) bytes over; shrink the tree or the pack" >&2
        exit 1
    fi
}

run() {
    [ -d "$PACK/datasets/train" ] || { echo "no $PACK: run 'bash $0 prepare' before the device call" >&2; exit 2; }
    local out="${OUT:-runs/gpu_session}"
    mkdir -p "$out"
    export SR_SHARED_DIR="$PWD/$PACK" PYTHONUNBUFFERED=1
    {
        echo "== $(date -u +%FT%TZ) $(hostname)"
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
        python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
                                   torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU seen')"
        echo "== training step (bench_train.py)"
        # shellcheck disable=SC2086  # BENCH_ARGS / INFER_ARGS: extra flags, for a dry run here
        python3 benchmarks/bench_train.py --models edsr_baseline,rcan --workers 8 \
            --data-root "$PACK/datasets/train" --hr-dirs T91,BSD200 ${BENCH_ARGS:-} || echo "bench_train failed (rc $?)"
        echo "== inference (bench_inference.py, random weights)"
        python3 benchmarks/bench_inference.py --device cuda --models edsr_baseline,rcan,srresnet --size 512 \
            --repeat 2 --skip memory,overhead \
            ${INFER_ARGS:-} || echo "bench_inference failed (rc $?)"
        if [ $# -ge 2 ]; then
            local model=$1 minutes=$2
            shift 2
            echo "== training $model x4 for $minutes min"
            python3 -m sr.train --config "configs/$model.yaml" model.scale=4 data.workers=8 \
                "train.max_minutes=$minutes" "$@" --run-dir "$out/run" --no-progress \
                || echo "training failed (rc $?)"
        fi
    } 2>&1 | tee "$out/gpu_session.log"
    [ -d "$out/run" ] || return 0
    # What comes back is at most 8 files of 16 MiB each, 64 MiB together: drop the
    # optimiser state, and for a large model also the best-on-validation copy and the
    # config (both are in final.safetensors' metadata), then split what is still too big.
    rm -f "$out/run/last.pt"
    if [ -n "$(find "$out/run" -type f -size +15M)" ]; then
        rm -f "$out/run/best.safetensors" "$out/run/config.yaml"
    fi
    find "$out/run" -type f -size +15M | while read -r f; do
        split -b 15M -d "$f" "$f.part-" && rm "$f"
    done
}

case "${1:-}" in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    *) echo "usage: bash $0 prepare | run [MODEL MINUTES [key=value ...]]" >&2; exit 2 ;;
esac
