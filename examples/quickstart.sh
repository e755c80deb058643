#!/usr/bin/env bash
# The whole release workflow on phantom patients, step by step, with the synthrelease CLI:
#
#   phantoms -> ingest -> train -> sample -> audit (the release gate) -> keygen -> export (only on PASS) -> verify
#
# Usage:  examples/quickstart.sh [OUT]        OUT: a new folder (default: ./quickstart)
#
# Sizes and steps come from environment variables. The defaults are a real laptop run on the CPU (60 patients
# at 32^3, the tiny ldm config: roughly half an hour):
#
#   MODALITY=ct|mri    CASES=60    SHAPE=32    HOLDOUT=0.35 (21 unseen patients: the default policy asks for 20)
#   CONFIG=examples/configs/ldm-<modality>-cpu32.toml    STEPS= (empty: the config's; must exceed its ae_steps)
#   N_SAMPLES=40    SAMPLE_STEPS=50 (DDIM)    POLICY=default    EMBEDDING_STEPS= (empty: the audit's default)
#   SEED=0    AUDIT_ARGS= (more 'synthrelease audit' options, e.g. "--workers 4")
#
# A smoke run in a few minutes (the gate fails on so few patients: an expected outcome, see below; the --only
# options leave out the utility check, which trains three segmentation models):
#
#   printf 'generator = "ldm"\nsteps = 6\nae_steps = 3\n' > /tmp/tiny.toml
#   CASES=8 SHAPE=16 HOLDOUT=0.25 CONFIG=/tmp/tiny.toml N_SAMPLES=4 SAMPLE_STEPS=5 EMBEDDING_STEPS=2 \
#     AUDIT_ARGS="--only integrity --only privacy --only fidelity" examples/quickstart.sh /tmp/quickstart
#
# Exit code: 0 when the walkthrough ran to its end, whatever the verdict (the verdict is printed last; the audit's
# own exit code, 0 pass or 1 fail, is printed beside it). A command that fails stops the script with its exit code
# (2 bad input, 3 internal error).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-quickstart}
modality=${MODALITY:-ct}
cases=${CASES:-60}
shape=${SHAPE:-32}
holdout=${HOLDOUT:-0.35}
config=${CONFIG:-$here/configs/ldm-$modality-cpu32.toml}
steps=${STEPS:-}
n_samples=${N_SAMPLES:-40}
sample_steps=${SAMPLE_STEPS:-50}
policy=${POLICY:-default}
embedding_steps=${EMBEDDING_STEPS:-}
seed=${SEED:-0}
read -r -a audit_args <<< "${AUDIT_ARGS:-}"

case $modality in
  ct) format=dicom ;;   # DICOM series + RTSTRUCT with planted fake PHI: ingest de-identifies them
  mri) format=brats ;;  # the BraTS 2023 layout: <case>-t1c|-t1n|-t2w|-t2f|-seg.nii.gz
  *) echo "MODALITY must be ct or mri, not '$modality'" >&2; exit 2 ;;
esac
if [ -e "$out" ]; then
  echo "$out already exists: give a new folder (or remove it)" >&2
  exit 2
fi
mkdir -p "$out"

ws=$out/WS       # the private workspace: never leaves the hospital
set_name=ldm-s$((seed + 1))
package=$out/release/synth-$modality-1.0
key=$out/keys/publisher.key

step() { printf '\n== %s\n' "$*"; }

step "1/8 phantoms: $cases fake $modality patients at ${shape}^3 ($format)"
synthrelease phantoms "$out/source" --modality "$modality" --cases "$cases" --shape "$shape" --format "$format" \
  --seed "$seed"

step "2/8 ingest: de-identify, pseudonymize, preprocess, split by patient into the private workspace $ws"
synthrelease ingest "$out/source" --modality "$modality" --out "$ws" --holdout "$holdout" --seed "$seed"

step "3/8 train: latent diffusion (ldm) on the training split only ($config)"
synthrelease train "$ws" --generator ldm --config "$config" --name ldm ${steps:+--steps "$steps"}

step "4/8 sample: $n_samples synthetic cases into $ws/synthetic/$set_name"
synthrelease sample "$ws" --model ldm --n "$n_samples" --seed "$((seed + 1))" --name "$set_name" \
  --sampler ddim --steps "$sample_steps"

step "5/8 audit: privacy and fidelity checks, judged by the policy '$policy'"
# Exit code 0: the gate passed; 1: it failed (an outcome, not an error: continue and report it); 2: bad input.
gate=0
synthrelease --quiet audit "$ws" --synthetic "$set_name" --policy "$policy" \
  ${embedding_steps:+--embedding-steps "$embedding_steps"} "${audit_args[@]}" || gate=$?
case $gate in
  0) verdict=PASS ;;
  1) verdict=FAIL ;;
  *) echo "the audit could not run (exit $gate)" >&2; exit "$gate" ;;
esac
audit_dir=$ws/audits/$set_name
echo "audit exit code $gate: the gate says $verdict"
# How to read the verdict: the exit code above; "verdict" in report.json (e.g. jq -r .verdict report.json); the
# rules in summary.md (shown here, up to the headline metrics); everything, with figures, in report.html.
sed '/^### Headline metrics/,$d' "$audit_dir/summary.md"
echo "full report: $audit_dir/report.html (it shows real patients' images: keep it inside the hospital)"

if [ "$gate" -ne 0 ]; then
  step "6-8/8 keygen, export, verify: skipped, the gate failed"
  echo "Nothing is exported: 'synthrelease export' refuses (exit 1) any set whose latest audit did not pass."
  echo "Read the failed rules above. On a small phantom cohort they are the evidence rules first: too few unseen"
  echo "patients for the privacy bounds (raise CASES; at least 20 must be held out) and a model trained too briefly."
  echo
  echo "verdict: $verdict (policy $policy; see $audit_dir/report.html)"
  exit 0
fi

step "6/8 keygen: an Ed25519 key pair to sign the package ($key, $key.pub)"
mkdir -p "$(dirname "$key")" "$(dirname "$package")"
synthrelease keygen "$key"

step "7/8 export: the signed release package $package (+ .tar.gz)"
synthrelease export "$ws" --synthetic "$set_name" --out "$package" --key "$key" --tar

step "8/8 verify: what the recipient runs, with the publisher's public key"
synthrelease verify "$package.tar.gz" --key "$key.pub"
synthrelease verify "$package" --key "$key.pub"

echo
echo "verdict: $verdict (policy $policy); package $package, ready for nnU-Net (see README 'Train with nnU-Net v2')"
