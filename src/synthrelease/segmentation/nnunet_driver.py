"""Child-process driver of the nnU-Net engine: ``python -m synthrelease.segmentation.nnunet_driver REQUEST.json``.

nnunetv2 reads ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` from the environment when
``nnunetv2.paths`` is imported. To give every call its own folders without touching the caller's environment, the
engine starts this module in a child process with those variables set, and nnunetv2 is imported only here. Steps:

- ``plan``: fingerprint (with the dataset integrity check), plan, preprocess one configuration (the API of
  ``nnUNetv2_plan_and_preprocess``);
- ``train``: the trainer class by name (built-in, or ours through ``nnUNet_extTrainer``) on fold ``all``; the
  cross-validation prediction nnU-Net runs after training is skipped (the utility check tests on the real holdout);
- ``predict``: ``nnUNetPredictor`` over a folder of ``<case>_<XXXX>`` images (sequential: no worker processes).

Exit code ``IMPORT_FAILED`` (4) when nnunetv2 cannot be imported, 1 on any other failure (traceback on stdout, which
the engine keeps in a log).
"""

from __future__ import annotations

import json
import random
import sys
import traceback
from pathlib import Path
from typing import Any

IMPORT_FAILED = 4


def _seed(seed: int) -> None:
    """nnU-Net draws from the global generators: seeding them here changes only this throwaway process."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _plan(req: dict[str, Any]) -> None:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    n = max(1, int(req["processes"]))
    extract_fingerprints([req["dataset_id"]], check_dataset_integrity=True, num_processes=n)
    plan_experiments([req["dataset_id"]])
    preprocess([req["dataset_id"]], configurations=(req["configuration"],), num_processes=(n,))


def _train(req: dict[str, Any]) -> None:
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(req["dataset_id"]), req["configuration"], "all", req["trainer"],
                                    "nnUNetPlans", device=torch.device(req["device"]))
    trainer.run_training()


def _predict(req: dict[str, Any]) -> None:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    device = torch.device(req["device"])
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=bool(req["mirroring"]),
                                perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(req["model_folder"], use_folds=("all",),
                                                   checkpoint_name="checkpoint_final.pth")
    predictor.predict_from_files_sequential(req["input"], req["output"], save_probabilities=False, overwrite=True)


def main(argv: list[str]) -> int:
    req = json.loads(Path(argv[0]).read_text())
    try:
        import nnunetv2  # noqa: F401
        import torch
    except ImportError as exc:
        print(f"nnunetv2 cannot be imported: {exc}", file=sys.stderr)
        return IMPORT_FAILED
    torch.set_num_threads(max(1, int(req.get("threads", 1))))
    _seed(int(req.get("seed", 0)))
    try:
        {"plan": _plan, "train": _train, "predict": _predict}[req["step"]](req)
    except ImportError as exc:  # a part of nnunetv2 or one of its dependencies is missing
        traceback.print_exc(file=sys.stdout)
        print(f"nnunetv2 cannot be imported: {exc}", file=sys.stderr)
        return IMPORT_FAILED
    except Exception:
        traceback.print_exc(file=sys.stdout)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
