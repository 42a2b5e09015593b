"""Dice: the score segmentation is reported in, and (soft) half of the training loss."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def dice(pred, target) -> float:
    """Dice of two binary masks, 2|P and G| / (|P| + |G|); 1 when both are empty (nothing to find, nothing found)."""
    p, g = np.asarray(pred) > 0, np.asarray(target) > 0
    total = int(p.sum()) + int(g.sum())
    return 1.0 if total == 0 else 2.0 * int((p & g).sum()) / total


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per mask (probabilities, not thresholded), averaged; ``eps`` keeps empty masks finite."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0,
                  bce_weight: float = 1.0) -> torch.Tensor:
    """Dice for the overlap of each structure whatever its size, BCE for every pixel's calibration."""
    target = target.to(logits.dtype)
    return (dice_weight * soft_dice_loss(logits, target)
            + bce_weight * F.binary_cross_entropy_with_logits(logits, target))
