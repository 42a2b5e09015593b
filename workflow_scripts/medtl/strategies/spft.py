"""SPFT, staged progressive fine-tuning (the second study).

1. head-only stage for ``head_epochs``;
2. progressive unfreezing of the top ``top_k`` backbone blocks (transformer layers
   for a ViT), one more every ``unfreeze_every`` epochs, from the top down;
3. class-aware loss weights from label counts, normalised to mean 1, refined after
   each validation by the per-class AUC (weaker classes gain weight);
4. EMA of the weights, which is what gets evaluated;
5. AdamW with a lower encoder rate (``encoder_lr_ratio`` x lr) than the head's (lr),
   cosine schedule, mixed precision on GPU; early stopping on validation AUROC.

Each component can be switched off, which is how the ablation is expressed.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from medtl.strategies.base import STRATEGIES, Strategy


def count_weights(task: str, targets: np.ndarray) -> np.ndarray:
    """Positive weights (multi-label: negatives/positives) or inverse class frequency, mean 1."""
    targets = np.asarray(targets, dtype=np.float64)
    pos = targets.sum(axis=0)
    if task == "multilabel":
        neg = len(targets) - pos
        w = neg / np.maximum(pos, 1.0)
    else:
        w = len(targets) / (targets.shape[1] * np.maximum(pos, 1.0))
    return w / w.mean()


def refine_weights(weights: np.ndarray, per_class_auc, gamma: float) -> np.ndarray:
    """Scale each class by 1 + gamma * (mean AUC - its AUC), then renormalise to mean 1."""
    auc = np.asarray(per_class_auc, dtype=np.float64)
    valid = np.isfinite(auc)
    if not valid.any() or gamma == 0:
        return weights
    factor = np.ones_like(weights)
    factor[valid] = 1.0 + gamma * (auc[valid].mean() - auc[valid])
    w = weights * np.clip(factor, 0.1, None)
    return w / w.mean()


@STRATEGIES.register("spft")
class SPFT(Strategy):
    defaults = {
        "head_epochs": 2,
        "top_k": 2,
        "unfreeze_every": 1,
        "progressive": True,
        "class_weights": True,
        "refine_gamma": 0.5,
        "ema": True,
        "ema_decay": 0.99,
        "encoder_lr_ratio": 0.06,
        "weight_decay": 0.05,
        "warmup_epochs": 0,
        "amp": True,
        "monitor": "auroc",
    }

    positive_ints = ("unfreeze_every",)

    @classmethod
    def check_settings(cls, settings):
        problems = super().check_settings(settings)
        top_k = settings.get("top_k", cls.defaults["top_k"])
        if top_k != "all" and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
            problems.append(f"'top_k' must be 'all' or an integer of at least 0, got {top_k!r}")
        return problems

    def __init__(self, ctx, **settings):
        super().__init__(ctx, **settings)
        s = self.settings
        self.monitor = s["monitor"]
        self._weights = (count_weights(ctx.task, ctx.train_targets) if s["class_weights"]
                         else None)
        self.ema = (AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(float(s["ema_decay"])),
                                  use_buffers=True) if s["ema"] else None)

    def n_unfrozen(self, epoch: int) -> int:
        s = self.settings
        backbone = self.net.n_blocks - 1
        top_k = backbone if s["top_k"] == "all" else min(int(s["top_k"]), backbone)
        if not s["progressive"] or epoch < int(s["head_epochs"]):
            return 0
        return min(top_k, 1 + (epoch - int(s["head_epochs"])) // int(s["unfreeze_every"]))

    def trainable_blocks(self, epoch: int) -> set[int]:
        head_block = self.net.n_blocks - 1
        return set(range(head_block - self.n_unfrozen(epoch), head_block + 1))

    def param_groups(self):
        encoder, head = [], []
        for _, _, is_head, p in self.net.named_block_parameters():
            (head if is_head else encoder).append(p)
        ratio = float(self.settings["encoder_lr_ratio"])
        return [{"params": encoder, "lr": self.ctx.lr * ratio, "name": "encoder"},
                {"params": head, "lr": self.ctx.lr, "name": "head"}]

    def build_optimizer(self):
        return torch.optim.AdamW(self.param_groups(), lr=self.ctx.lr,
                                 weight_decay=float(self.settings["weight_decay"]))

    def build_scheduler(self, optimizer):
        total = max(1, self.ctx.epochs * self.ctx.steps_per_epoch)
        warmup = int(self.settings["warmup_epochs"]) * self.ctx.steps_per_epoch

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def class_weights(self):
        if self._weights is None:
            return None
        return torch.as_tensor(self._weights, dtype=torch.float32, device=self.ctx.device)

    def after_step(self):
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    def on_validation(self, epoch, per_class_auc):
        if self._weights is not None:
            self._weights = refine_weights(self._weights, per_class_auc, float(self.settings["refine_gamma"]))

    def eval_model(self):
        return self.ema.module if self.ema is not None else self.net

    def uses_amp(self):
        return bool(self.settings["amp"])

    def state_dict(self):
        return {"weights": None if self._weights is None else self._weights.tolist(),
                "ema": None if self.ema is None else self.ema.state_dict()}

    def load_state_dict(self, state):
        if state.get("weights") is not None:
            self._weights = np.asarray(state["weights"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
