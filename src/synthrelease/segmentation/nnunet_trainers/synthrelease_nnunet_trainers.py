"""nnU-Net trainers shipped by synthrelease, found by nnU-Net through ``nnUNet_extTrainer``.

nnU-Net looks trainer classes up by name, first inside ``nnunetv2.training.nnUNetTrainer`` and then in the folders
listed in the ``nnUNet_extTrainer`` environment variable, importing every module there by its file name. This file
lives in such a folder of its own (no ``__init__.py``): the synthrelease engine puts the folder into the child
process's ``nnUNet_extTrainer``, never into this process's environment. It is imported only inside that child.

``nnUNetTrainer_SynthReleaseBudget`` runs a fixed budget: ``SYNTHRELEASE_NNUNET_EPOCHS`` epochs (default 2) of
``SYNTHRELEASE_NNUNET_ITERATIONS`` iterations (default 10), a few validation iterations each. The engine sets both
from the configured steps, so every arm of the utility check trains for the same number of iterations; the
defaults make the short run for CPU tests.
"""

import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

_CUDA = torch.device("cuda")  # nnU-Net's default device argument


class nnUNetTrainer_SynthReleaseBudget(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = _CUDA) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get("SYNTHRELEASE_NNUNET_EPOCHS", "2"))
        self.num_iterations_per_epoch = int(os.environ.get("SYNTHRELEASE_NNUNET_ITERATIONS", "10"))
        self.num_val_iterations_per_epoch = max(1, min(5, self.num_iterations_per_epoch // 5))
        self.save_every = max(self.num_epochs, 1) + 1  # only the final checkpoint
