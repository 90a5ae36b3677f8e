"""Multi-label losses on logits: BCE, focal and asymmetric (ASL), each with per-class `pos_weight` and label smoothing.

`make_loss(cfg.train, pos_weight)` returns `loss(logits, targets) -> scalar` (mean over rows and labels).
`pos_weight` (from the fold's training rows, src/weights.py; given on the logits' device, so no step copies it)
multiplies the positive term of every loss;
label smoothing moves the 0/1 targets to eps/2 and 1 - eps/2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from src.config import TrainConfig
from src.errors import UserError

LOSSES = ("bce", "focal", "asl")


def smooth(targets: torch.Tensor, eps: float) -> torch.Tensor:
    return targets * (1.0 - eps) + 0.5 * eps if eps > 0 else targets


def bce(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)


def focal(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None,
          gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017): BCE terms scaled by (1 - p_t)^gamma; gamma=0 is BCE."""
    p = torch.sigmoid(logits)
    log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    pos = targets * (1 - p).pow(gamma) * log_p
    neg = (1 - targets) * p.pow(gamma) * log_1mp
    if pos_weight is not None:
        pos = pos * pos_weight
    return -(pos + neg).mean()


def asl(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None,
        gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al. 2021): negatives use the shifted probability max(p - clip, 0) and a
    stronger focusing exponent. gamma_pos=gamma_neg=clip=0 is BCE."""
    p = torch.sigmoid(logits)
    p_neg = (p - clip).clamp(min=0) if clip > 0 else p
    log_p = F.logsigmoid(logits)
    log_1m_pneg = torch.log((1 - p_neg).clamp(min=1e-8)) if clip > 0 else F.logsigmoid(-logits)
    pos = targets * (1 - p).pow(gamma_pos) * log_p
    neg = (1 - targets) * p_neg.pow(gamma_neg) * log_1m_pneg
    if pos_weight is not None:
        pos = pos * pos_weight
    return -(pos + neg).mean()


def make_loss(cfg: TrainConfig, pos_weight: torch.Tensor | None = None) -> Callable:
    """The training criterion chosen by `train.loss`; logits are upcast to float32."""
    if cfg.loss not in LOSSES:
        raise UserError(f"train.loss must be one of {LOSSES}, got {cfg.loss!r}")
    if not 0 <= cfg.label_smoothing < 1:
        raise UserError(f"train.label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
    eps = cfg.label_smoothing

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, y = logits.float(), smooth(targets.float(), eps)
        if cfg.loss == "focal":
            return focal(logits, y, pos_weight, cfg.focal_gamma)
        if cfg.loss == "asl":
            return asl(logits, y, pos_weight, cfg.asl_gamma_pos, cfg.asl_gamma_neg, cfg.asl_clip)
        return bce(logits, y, pos_weight)

    return loss
