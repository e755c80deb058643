#!/usr/bin/env bash
# Phantom quickstart: fake head & neck CT patients -> private workspace -> latent diffusion -> synthetic cohort.
# Runs on a CPU; about 10 minutes with the tiny config (pass a smaller --steps to try it faster).
set -euo pipefail
out=${1:-quickstart}
here=$(cd "$(dirname "$0")" && pwd)
synthrelease phantoms "$out/P" --modality ct --cases 24 --shape 32 --format dicom --seed 0
synthrelease ingest "$out/P" --modality ct --out "$out/WS" --holdout 0.25 --seed 0
synthrelease train "$out/WS" --generator ldm --config "$here/configs/ldm-ct-cpu32.toml" --name ldm
synthrelease sample "$out/WS" --model ldm --n 16 --seed 1 --name ldm-s1 --sampler ddim --steps 50
synthrelease info "$out/WS"
