"""``monai``: the built-in segmentation engine, a MONAI 3D U-Net trained on patches; CPU-capable.

Training: every case of the cohorts in memory; ``steps`` AdamW steps (cosine-decayed learning rate) of
``batch_size`` patches from ``patches.PatchSampler`` (foreground-centred share, left-right flips); loss MONAI
``DiceCELoss`` (softmax, foreground classes, batch Dice, plus cross-entropy), the loss nnU-Net uses. Networks:
``DynUNet`` (nnU-Net's architecture, residual blocks, instance norm; the default) or MONAI ``UNet`` (residual units,
instance norm), which is cheaper but downsamples at its first layer: on 32^3 phantom CT it learns bone but finds few
holdout tumours (a bright 24-48 mm tumour, 500 steps: Dice 0.32 against DynUNet's 0.72, benchmarks/RESULTS.md).
Inference: MONAI ``sliding_window_inference`` with the training patch, Gaussian weighting, then argmax; written
back as schema label values on each input image's grid.

Seeding: weights are drawn inside ``torch.random.fork_rng`` from ``seed``, patches from a ``numpy`` generator of the
same seed, so a run changes no global random state and the same seed gives the same model on CPU (GPU kernels may
add nondeterminism). Threads: the caller's ``torch`` thread count is used as it is, and recorded in ``model.json``
on CPU: it is part of the result (fp32 kernels split their sums by thread, so the same seed on one and on two
threads gives models of other bytes); the utility check fixes it to one thread per arm.

Memory: the training cases are held in memory as float32 (64 MiB per channel and case at 256^3); study-scale
cohorts belong to the nnU-Net engine. Cost (one CPU thread, features 16-128, batch 2): DynUNet about 0.25 s a step
at 32^3 patches (the default 500 steps: about 2 minutes per model), 8x that at 64^3; UNet 0.06-0.10 s at 32^3 and
0.77 s at 64^3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from synthrelease.data.nnunet import read_nnunet
from synthrelease.data.schema import LabelSchema
from synthrelease.errors import InputError
from synthrelease.runtime.precision import autocast, resolved_precision
from synthrelease.segmentation.base import (
    SegmentationConfig,
    SegmentationEngine,
    new_model_folder,
    read_model_info,
    resolve_device,
    write_model_info,
)
from synthrelease.segmentation.io import iter_images, write_label_map
from synthrelease.segmentation.patches import PatchSampler, augment_batch

__all__ = ["MonaiEngine", "build_network", "default_patch"]

MAX_PATCH = 64


def default_patch(grid: Sequence[int], levels: int) -> tuple[int, int, int]:
    """The grid capped at ``MAX_PATCH`` per axis, rounded down to a multiple of the network's total stride."""
    stride = 2 ** (levels - 1)
    z, y, x = (max(stride, min(int(s), MAX_PATCH) // stride * stride) for s in grid)
    return z, y, x


def build_network(config: SegmentationConfig, in_channels: int, n_classes: int) -> nn.Module:
    levels = len(config.features)
    if config.network == "dynunet":
        from monai.networks.nets import DynUNet

        strides = [1] + [2] * (levels - 1)
        return DynUNet(3, in_channels, n_classes, kernel_size=[3] * levels, strides=strides,
                       upsample_kernel_size=strides[1:], filters=list(config.features), norm_name="instance",
                       res_block=True)
    from monai.networks.nets import UNet

    return UNet(3, in_channels, n_classes, channels=config.features, strides=(2,) * (levels - 1),
                num_res_units=2, norm="instance")


def _load_training_cases(cohort_dirs: Sequence[Path]) -> tuple[list[np.ndarray], list[np.ndarray], LabelSchema,
                                                               tuple[str, ...]]:
    images, labels = [], []
    schema, channels = None, None
    for d in cohort_dirs:
        cohort = read_nnunet(Path(d))
        if schema is None:
            schema, channels = cohort.schema, cohort.channel_names
        elif set(cohort.schema.labels.items()) != set(schema.labels.items()) or cohort.channel_names != channels:
            raise InputError("has other labels or channels than the first training cohort", where=d,
                             fix="train on cohorts of one label schema and channel set")
        for case in cohort:
            images.append(case.image)
            labels.append(case.labels)
    if schema is None or channels is None or not images:
        raise InputError("no training cohort given", fix="pass at least one nnU-Net raw folder")
    return images, labels, schema, channels


class MonaiEngine(SegmentationEngine):
    name = "monai"

    def train(self, cohort_dirs: Sequence[Path], out: Path, config: SegmentationConfig) -> Path:
        from monai.losses import DiceCELoss

        out = new_model_folder(out)
        images, labels, schema, channels = _load_training_cases(cohort_dirs)
        values = np.array(schema.values)
        lut = np.zeros(256, np.int64)
        lut[values] = np.arange(len(values))
        patch = config.patch_size or default_patch(labels[0].shape, len(config.features))
        device = torch.device(resolve_device(config.device))
        sampler = PatchSampler(images, [lut[lab] for lab in labels], patch,
                               foreground_fraction=config.foreground_fraction, flip=config.flip, seed=config.seed)
        del images, labels
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
        losses = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            gen = torch.Generator().manual_seed(config.seed)
            net = build_network(config, len(channels), len(values)).to(device)
            opt = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=1e-5)
            net.train()
            for step in range(config.steps):
                for group in opt.param_groups:  # cosine decay to 5% of the initial rate
                    group["lr"] = config.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step /
                                                                                         config.steps)))
                x, y = sampler.batch(config.batch_size)
                if config.augment:
                    x, y = augment_batch(x, y, gen)
                with autocast(device, cuda_bf16=False, cpu_bf16=config.cpu_bf16):
                    logits = net(x.to(device))
                loss = loss_fn(logits.float(), y.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                self.progress("train segmentation", step + 1, config.steps)
        torch.save({k: v.cpu() for k, v in net.state_dict().items()}, out / "model.pt")
        write_model_info(out, self.name, config, labels=schema.labels_json(), regions=schema.regions_json(),
                         channels=list(channels), patch_size=list(patch),
                         precision=resolved_precision(device, cuda_bf16=False, cpu_bf16=config.cpu_bf16),
                         final_loss=float(np.mean(losses[-max(1, len(losses) // 10):])),
                         **({"cpu_threads": torch.get_num_threads()} if device.type == "cpu" else {}))
        return out

    def predict(self, model: Path, cohort_dir: Path, out: Path) -> Path:
        from monai.inferers import sliding_window_inference

        info = read_model_info(model)
        if info.get("engine") != self.name:
            raise InputError(f"was trained by the {info.get('engine')!r} engine, not {self.name!r}", where=model)
        config = SegmentationConfig.from_dict(info["config"])
        values = np.array(sorted(info["labels"].values()), dtype=np.uint8)
        device = torch.device(resolve_device(config.device))
        with torch.random.fork_rng(devices=[]):
            net = build_network(config, len(info["channels"]), len(values))
        net.load_state_dict(torch.load(Path(model) / "model.pt", map_location="cpu", weights_only=True))
        net.to(device).eval()
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        cases = list(iter_images(cohort_dir))
        for i, case in enumerate(cases):
            if case.image.shape[0] != len(info["channels"]):
                raise InputError(f"case {case.case_id} has {case.image.shape[0]} channels; the model takes "
                                 f"{len(info['channels'])}", where=cohort_dir)
            x = torch.from_numpy(case.image)[None].to(device)
            with torch.no_grad(), autocast(device, cuda_bf16=False, cpu_bf16=config.cpu_bf16):
                logits = sliding_window_inference(x, tuple(info["patch_size"]), config.batch_size, net,
                                                  overlap=config.overlap, mode="gaussian")
            classes = torch.as_tensor(logits).argmax(dim=1)[0].cpu().numpy()
            write_label_map(values[classes], case.geometry, out, case.case_id)
            self.progress("predict segmentation", i + 1, len(cases))
        return out
