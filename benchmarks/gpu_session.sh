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
#     bash benchmarks/gpu_session.sh run [MODEL MINUTES [key=value ...] [-- MODEL MINUTES ...]]
#     1. GPU, driver and torch versions;
#     2. benchmarks/bench_train.py: edsr_baseline and rcan x4 at batch 16, LR patch 48, the
#        trainer's default step (bf16 autocast, channels_last) against plain fp32 NCHW in
#        one process: it/s, images/s, data-wait share, MFU, host operators per step and the
#        share of the step the GPU's kernels run; then edsr_baseline again under torch.compile
#        in mode GPU_BENCH_COMPILE (default reduce-overhead: fusion and CUDA graphs; empty skips it);
#     3. benchmarks/bench_inference.py speed table on the GPU (random weights, the large models);
#     4. optionally trains MODEL (a recipe in configs/, x4) for MINUTES of wall time into
#        $OUT/run_MODEL, several side by side when separated by "--"; MINUTES "auto" runs
#        until GPU_DEADLINE_S (default 540) seconds after the start less 45 s for the export,
#        and train.steps=auto sizes the schedule from the measured edsr_baseline it/s (a
#        rough guess, shared by the runs; validation 8 times). Each run's exported weights
#        and CSV logs come back (files over 15 MiB are split: rejoin with
#        `cat final.safetensors.part-* > final.safetensors`); its console output is in the log.
#        GPU_SKIP_BENCH=1 skips steps 2 and 3 (auto steps then assume AUTO_STEPS_FALLBACK_ITS).
#     Everything printed is also saved as $OUT/gpu_session.log.
# Dry run here (tiny settings, CPU):  OUT=/tmp/gpu BENCH_ARGS="--steps 2 --warmup 1 --batch 2
#     --patch 16 --models espcn" INFER_ARGS="--device cpu --models espcn --size 64 --repeat 1"
#     bash benchmarks/gpu_session.sh run espcn 0.5 train.steps=20 -- fsrcnn auto train.steps=auto
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

start_training() {  # MODEL MINUTES [key=value ...], in the background; called by run
    local model=$1 minutes=$2 steps left
    shift 2
    local -a spec=("$@") extra=()
    if [ "$minutes" = auto ]; then  # until GPU_DEADLINE_S after the start, less a margin for export
        left=$(( ${GPU_DEADLINE_S:-540} - (SECONDS - began) - ${GPU_EXPORT_MARGIN_S:-45} ))
        minutes=$(python3 -c "print(round(max($left, 30) / 60, 2))")
    fi
    if [[ " ${spec[*]} " == *" train.steps=auto "* ]]; then
        steps=$(python3 -c "print(max(100, int(${its:-${AUTO_STEPS_FALLBACK_ITS:-20}} * $minutes * 60 * ${AUTO_STEPS_SHARE:-0.8} / $n) // 100 * 100))")
        spec=("${spec[@]/#train.steps=auto/train.steps=$steps}")
        extra=("val.every=$(( steps / 8 ))" "train.ckpt_every=$(( steps / 4 ))")
    fi
    local dir="$out/run_$model"
    echo "== training $model x4 for $minutes min: ${spec[*]} ${extra[*]}" | tee -a "$out/gpu_session.log"
    python3 -m sr.train --config "configs/$model.yaml" model.scale=4 "data.workers=$(( 12 / n ))" \
        "train.threads=$(( 8 / n ))" "train.max_minutes=$minutes" "${extra[@]}" "${spec[@]}" \
        --run-dir "$dir" --no-progress > "$out/train_$model.log" 2>&1 &
    pids+=($!) dirs+=("$dir")
}

bench() {  # a benchmark that may fail or hang without costing the trainings after it
    timeout "${BENCH_TIMEOUT_S:-240}" python3 "$@" || echo "${1##*/} failed (rc $?)"
}

run() {
    [ -d "$PACK/datasets/train" ] || { echo "no $PACK: run 'bash $0 prepare' before the device call" >&2; exit 2; }
    local out="${OUT:-runs/gpu_session}" began=$SECONDS
    mkdir -p "$out"
    SR_SHARED_DIR=$(cd "$PACK" && pwd)
    export SR_SHARED_DIR PYTHONUNBUFFERED=1
    {
        echo "== $(date -u +%FT%TZ) $(hostname)"
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
        python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
                                   torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU seen')"
        if [ -n "${GPU_SKIP_BENCH:-}" ]; then echo "== benchmarks skipped (GPU_SKIP_BENCH)"; exit 0; fi
        echo "== training step (bench_train.py)"
        local -a data=(--workers 8 --data-root "$PACK/datasets/train" --hr-dirs T91,BSD200)
        # shellcheck disable=SC2086  # BENCH_ARGS / INFER_ARGS: extra flags, for a dry run here
        bench benchmarks/bench_train.py --models edsr_baseline,rcan "${data[@]}" ${BENCH_ARGS:-}
        # The 2026-12-04 H200 run found AMP no faster (MFU under 4%): many small kernels
        # or host dispatch bound that step, and compiling with CUDA graphs addresses both
        # (compile time falls in the warm-up steps, not the timed ones).
        local mode="${GPU_BENCH_COMPILE-reduce-overhead}"
        if [ -n "$mode" ]; then
            echo "== training step with torch.compile (bench_train.py --compile $mode)"
            bench benchmarks/bench_train.py --compile "$mode" --models edsr_baseline --warmup 20 "${data[@]}" ${BENCH_ARGS:-}
        fi
        echo "== inference (bench_inference.py, random weights)"
        bench benchmarks/bench_inference.py --device cuda --models edsr_baseline,rcan,srresnet --size 512 \
            --repeat 2 --skip memory,overhead ${INFER_ARGS:-}
    } 2>&1 | tee "$out/gpu_session.log"
    [ $# -ge 2 ] || return 0

    # Training specs, separated by "--", run side by side on the one GPU.
    local n=1 arg
    for arg in "$@"; do [ "$arg" != "--" ] || n=$(( n + 1 )); done
    # "auto" steps: the bench's edsr_baseline it/s (default step, GPU to itself), shared by
    # the n runs, over the run's minutes, times AUTO_STEPS_SHARE for start-up and validation.
    local its
    its=$(awk '$1 == "edsr_baseline" && $3 == "default" {print $6; exit}' "$out/gpu_session.log")
    local -a pids=() dirs=() spec=()
    for arg in "$@" --; do
        if [ "$arg" != "--" ]; then spec+=("$arg"); continue; fi
        start_training "${spec[@]}"
        spec=()
    done
    local pid
    for pid in "${pids[@]}"; do wait "$pid" || echo "a training failed (rc $?)" >> "$out/gpu_session.log"; done
    local log dir
    for log in "$out"/train_*.log; do
        { echo "== $log"; cat "$log"; } >> "$out/gpu_session.log" && rm "$log"
    done
    # What comes back is at most 8 files of 16 MiB each, 64 MiB together: keep each run's
    # exported weights (the config and the scores are in their metadata) and its CSV logs,
    # and split what is still too big.
    for dir in "${dirs[@]}"; do
        [ -d "$dir" ] || continue
        rm -rf "$dir/last.pt" "$dir/config.yaml" "$dir/tb"
        [ ! -f "$dir/final.safetensors" ] || rm -f "$dir/best.safetensors"
        find "$dir" -type f -size +15M | while read -r f; do
            split -b 15M -d "$f" "$f.part-" && rm "$f"
        done
    done
    echo "== done after $(( SECONDS - began )) s" | tee -a "$out/gpu_session.log"
}

case "${1:-}" in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    *) echo "usage: bash $0 prepare | run [MODEL MINUTES [key=value ...] [-- MODEL MINUTES ...]]" >&2; exit 2 ;;
esac
