"""White-box membership-inference scores that generators compute on their own networks.

The audit (``checks.privacy.whitebox``) loads the model that made a synthetic set and calls
``Generator.membership_scores(images, classes, seed)`` on batches of real cases, brought into the model's input
space as training brings them (images in model range, class indices). Each generator returns, per attack, a tensor
of scores, higher = more likely a training case: ``(B,)`` is one score per case; ``(B, K)`` holds ``K`` components
of one attack (the loss at ``K`` timesteps, say) that the audit puts on one scale and averages.

The helpers here are the arithmetic that several generators share:

- ``denoising_scores``: the loss attack on a diffusion model (Yeom et al. 2018's loss threshold, as Carlini et al.
  2023 apply it to diffusion models): the training loss of a case at fixed timesteps, with fixed noise;
- ``secmi_scores``: SecMI's t-error (Duan et al. 2023): how far one deterministic DDIM step forth and back moves a
  case that was deterministically noised to timestep t - k;
- ``nearest_stored``: the distance to the closest case a model keeps verbatim (copycat, training masks).

Every draw comes from a ``torch.Generator`` seeded from ``seed``, and one noise draw serves every case (common
random numbers: cases differ in their loss, not in their luck), so a case's score does not depend on the batch it
is scored in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthrelease.generators.base import derive_seed

if TYPE_CHECKING:
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

__all__ = ["LOSS_FRACTIONS", "SECMI_FRACTIONS", "Predict", "attack_timesteps", "denoising_scores", "nearest_stored",
           "nearest_stored_labels", "per_case", "secmi_scores", "shared_noise", "to_epsilon"]

# timesteps of the loss attack, as fractions of the schedule (50, 100, 200, 400 of 1000): low to moderate noise, the
# range in which Carlini et al. 2023 attack (a memorised case is denoised far better there than an unseen one; at
# high noise every case looks alike)
LOSS_FRACTIONS = (0.05, 0.1, 0.2, 0.4)
# SecMI's t_sec and step: t = 100, k = 10 of 1000 steps, the values of Duan et al. 2023
SECMI_FRACTIONS = (0.1, 0.01)
_CHUNK_VALUES = 2**25  # float64 values of stored cases held at once by nearest_stored (256 MB)

Predict = Callable[[Tensor, Tensor], Tensor]  # (x_t, timesteps (B,)) -> the network's output, fp32


def per_case(x: Tensor) -> Tensor:
    """Mean over every axis but the first: ``(B, ...)`` -> ``(B,)``."""
    return x.flatten(1).mean(dim=1)


def attack_timesteps(num_train_timesteps: int, fractions: Sequence[float] = LOSS_FRACTIONS) -> list[int]:
    """The loss attack's timesteps for a schedule of ``num_train_timesteps`` (distinct, at least 1)."""
    last = num_train_timesteps - 1
    return sorted({min(last, max(1, round(f * num_train_timesteps))) for f in fractions})


def shared_noise(like: Tensor, seed: int, index: int) -> Tensor:
    """One Gaussian draw of ``like``'s per-case shape, the same for every case of the batch (draw ``index``)."""
    gen = torch.Generator().manual_seed(derive_seed(seed, index, 0x3E3B))
    one = torch.randn(tuple(like.shape[1:]), generator=gen)
    return one.to(like.device).expand_as(like)


def to_epsilon(out: Tensor, x_t: Tensor, alpha_bar: Tensor, prediction_type: str) -> Tensor:
    """The noise implied by a network output ``out`` at ``x_t`` (``alpha_bar`` = cumulative alpha of its timestep)."""
    a = alpha_bar.to(x_t)
    if prediction_type == "epsilon":
        return out
    if prediction_type == "sample":  # out is the clean estimate
        return (x_t - a.sqrt() * out) / (1 - a).sqrt()
    return a.sqrt() * out + (1 - a).sqrt() * x_t  # v = sqrt(a) eps - sqrt(1 - a) x0


def denoising_scores(predict: Predict, x0: Tensor, scheduler: DDPMScheduler | DDIMScheduler, prediction_type: str,
                     seed: int, *, weights: Tensor | None = None, timesteps: Sequence[int] | None = None) -> Tensor:
    """``(B, K)``: minus each case's training loss (mean squared error of the prediction target, channels weighted by
    ``weights`` as in training) at each of ``K`` timesteps, with one fixed noise draw per timestep."""
    steps = list(timesteps) if timesteps is not None else attack_timesteps(int(scheduler.num_train_timesteps))
    out = []
    for j, t in enumerate(steps):
        noise = shared_noise(x0, seed, j)
        tt = torch.full((x0.shape[0],), int(t), device=x0.device, dtype=torch.long)
        x_t = scheduler.add_noise(original_samples=x0, noise=noise, timesteps=tt)
        target = {"epsilon": noise, "sample": x0}.get(prediction_type)
        if target is None:
            target = scheduler.get_velocity(x0, noise, tt)
        err = (predict(x_t, tt) - target) ** 2  # (B, C, ...)
        per_channel = err.flatten(2).mean(dim=2)
        loss = per_channel.mean(dim=1) if weights is None else (per_channel * weights.to(err)).mean(dim=1)
        out.append(-loss)
    return torch.stack(out, dim=1)


def _ddim_move(predict: Predict, x: Tensor, t_from: int, t_to: int, alphas_cumprod: Tensor,
               prediction_type: str) -> Tensor:
    """One deterministic DDIM step (eta 0) from timestep ``t_from`` to ``t_to`` (either direction)."""
    a_from, a_to = alphas_cumprod[t_from].to(x), alphas_cumprod[t_to].to(x)
    tt = torch.full((x.shape[0],), t_from, device=x.device, dtype=torch.long)
    eps = to_epsilon(predict(x, tt), x, a_from, prediction_type)
    x0 = (x - (1 - a_from).sqrt() * eps) / a_from.sqrt()
    return a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps


def secmi_scores(predict: Predict, x0: Tensor, alphas_cumprod: Tensor, prediction_type: str) -> Tensor:
    """``(B,)``: minus SecMI's t-error, as the authors' code computes it: the case is carried from timestep 0 to
    ``t - k`` by deterministic DDIM inversion in steps of ``k``, then one DDIM step forward to ``t`` and one back;
    a memorised case returns to where it was. ``t`` and ``k`` are ``SECMI_FRACTIONS`` of the schedule (100 and 10
    of 1000)."""
    n = int(alphas_cumprod.shape[0])
    k = max(1, round(SECMI_FRACTIONS[1] * n))
    t = min(n - 1, max(k, k * round(SECMI_FRACTIONS[0] * n / k)))
    t -= t % k
    x = x0
    for s in range(0, t - k, k):
        x = _ddim_move(predict, x, s, s + k, alphas_cumprod, prediction_type)
    ahead = _ddim_move(predict, x, t - k, t, alphas_cumprod, prediction_type)
    back = _ddim_move(predict, ahead, t, t - k, alphas_cumprod, prediction_type)
    return -per_case((back - x) ** 2)


def nearest_stored(query: Tensor, n: int, rows: Callable[[slice], Tensor]) -> Tensor:
    """``(B,)``: minus the mean squared difference of each ``query`` case to its closest of ``n`` stored cases
    (compared flattened; float64, so that an exact copy scores 0). ``rows(slice)`` gives those stored cases, in
    the query's form, a few at a time (about ``_CHUNK_VALUES`` values held at once)."""
    q = query.flatten(1).double().cpu()
    q_sq = (q * q).sum(dim=1, keepdim=True)
    chunk = max(1, _CHUNK_VALUES // q.shape[1])
    best = torch.full((q.shape[0],), float("inf"), dtype=torch.float64)
    for first in range(0, n, chunk):
        s = rows(slice(first, min(first + chunk, n))).flatten(1).double().cpu()
        d = (q_sq + (s * s).sum(dim=1)[None] - 2.0 * q @ s.T).clamp_min(0.0)  # (B, chunk) squared distances
        best = torch.minimum(best, d.min(dim=1).values)
    return -(best / q.shape[1]).float()


def nearest_stored_labels(classes: Tensor, stored: Tensor) -> Tensor:
    """``(B,)``: minus the share of voxels in which each class map ``(B, Z, Y, X)`` differs from its closest
    ``stored`` map (one stored map at a time)."""
    q = classes.flatten(1).cpu()
    best = torch.ones(q.shape[0])
    for s in stored.flatten(1).cpu():
        best = torch.minimum(best, (q != s[None]).float().mean(dim=1))
    return -best
