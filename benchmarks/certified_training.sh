#!/bin/bash
# The RESULTS.md table "Certified training methods (issue 12)": `wsmooth experiment certified-training` at that
# table's size (sigma 0.01, 200 held-out digits, n0 100, n 1000; otherwise the command's defaults: wong_mnist on
# the 4,000 mnist5k training digits, 20 epochs, Adam lr 1e-3, batch 64, seed 0, tight certificate), resumable.
# Usage: bash benchmarks/certified_training.sh [DIR] [more options]    (the command's full size: drop this script)
set -euo pipefail
DIR=${1:-wsmooth_out/certified_training}
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} exec ${WSMOOTH:-wsmooth} experiment certified-training --out "$DIR" --resume \
    --sigmas 0.01 --max-images 200 --n0 100 --samples 1000 --radii 0,0.005,0.01,0.015,0.02,0.025 --no-progress "${@:2}"
