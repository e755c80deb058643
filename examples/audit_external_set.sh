#!/usr/bin/env bash
# Audit a synthetic set made by another tool (MAISI, a paper's code, a vendor), without a synthrelease workspace.
#
# Usage:  examples/audit_external_set.sh TRAIN HOLDOUT SYNTHETIC OUT [extra 'synthrelease audit' options]
#   e.g.  examples/audit_external_set.sh real/train real/holdout maisi/set1 audits/maisi-set1 --policy strict
#
# TRAIN, HOLDOUT and SYNTHETIC are three nnU-Net raw folders (the layout nnU-Net v2 trains on):
#   FOLDER/dataset.json                     {"channel_names": {"0": "CT"}, "labels": {"background": 0, "tumour": 1,
#                                            "bone": 2}, "numTraining": N, "file_ending": ".nii.gz"}
#   FOLDER/imagesTr/<case>_0000.nii.gz      one file per channel: _0000, _0001, ... (MRI: t1c, t1n, t2w, t2f)
#   FOLDER/labelsTr/<case>.nii.gz           the label map (integers of "labels")
# TRAIN: the real patients the generator was trained on; HOLDOUT: real patients it never saw (the privacy
# baseline: the default policy asks for at least 20); SYNTHETIC: the generated cases. All three share the channels,
# the label schema and one grid (resample the synthetic set to the real grid first if the tool used another).
# Case ids must differ between TRAIN and HOLDOUT. The modality is dataset.json's "modality" ("CT" or "MR") if
# present, else CT when the only channel is named "CT", else MR.
# Intensities: HU for CT, the MR scale as exported, or already preprocessed to [-1, 1] (background at -1). Each
# case is brought to the model range [-1, 1] for the fidelity checks: a case already there is kept, any other is
# mapped with its modality's default preprocessing (CT soft-tissue window [-200, 200] HU; MRI 0.1 / 99.9
# percentiles inside the head), as ingest does. Keep real and synthetic on the same scale where you can.
#
# OUT receives report.json, report.html, junit.xml, summary.md, policy.toml and figures. It holds real patients'
# images and features: keep it where the protected data is.
#
# Exit code: the audit's own. 0 the gate passed (or --policy none), 1 it failed, 2 bad input, 3 internal error.
set -euo pipefail

if [ "$#" -lt 4 ]; then
  echo "usage: $0 TRAIN HOLDOUT SYNTHETIC OUT [synthrelease audit options...]" >&2
  exit 2
fi
train=$1 holdout=$2 synthetic=$3 out=$4
shift 4

status=0
synthrelease --quiet audit --train "$train" --holdout "$holdout" --synthetic "$synthetic" --out "$out" "$@" \
  || status=$?

if [ "$status" -le 1 ] && [ -f "$out/summary.md" ]; then
  cat "$out/summary.md"
  echo
  echo "report: $out/report.html   CI test report: $out/junit.xml"
fi
case $status in
  0) echo "gate passed (exit 0)" ;;
  1) echo "gate FAILED (exit 1): see the failed rules above" ;;
  *) echo "the audit could not run (exit $status)" >&2 ;;
esac
exit "$status"
