"""SPFT, staged progressive fine-tuning (the second study, section II and Fig. 6).

The stages are the schedule every task shares (:class:`medtl.staging.StageSchedule`, the backbone
units being the network's blocks). Stage 1 (``head_epochs`` epochs): the head alone trains, with
the plain loss. Stage 2 (every later epoch):

- progressive unfreezing of the top ``top_k`` backbone blocks (transformer layers for a ViT),
  one more every ``unfreeze_every`` epochs, from the top down (``progressive: false``: all ``top_k``
  at once; ``top_k: 0``: none, the head trains alone throughout);
- class-aware loss weights (eq. 4-6): w_c = N_neg,c / N_pos,c, normalised to mean 1, multiplying
  the whole per-class term of the loss, and refined after each validation by the per-class AUC
  (weaker classes gain weight);
- an EMA of the weights (eq. 7), which is what gets evaluated: a copy of the weights stage 1 left,
  taken when stage 2 begins, then θ_EMA ← α θ_EMA + (1 − α) θ after every optimizer step with the fixed
  α = ``ema_decay`` (:class:`medtl.fit.Ema`; no warm-up: the paper's eq. 7 has none, and the copy holds
  stage 1's trained head, not a random one).

Throughout: AdamW with a lower encoder rate (``encoder_lr_ratio`` x lr) than the head's (lr), a
cosine schedule, mixed precision on GPU, early stopping on validation AUROC.
``components_from: start`` applies class weights and EMA from the first epoch instead (the
behaviour before the paper's two-stage reading was adopted). Each component can be switched off,
which is how the ablation is expressed. The loss is eq. 6's per-class binary cross-entropy for every
task (``loss: bce``): multi-class data (HAM10000) trains on one-hot targets, one class against the rest,
and is still predicted with a softmax; ``loss: task`` uses the softmax cross-entropy instead (weighted by
the same w_c), which on imbalanced data trades accuracy for rare-class recall (docs/fidelity.md).
"""
from __future__ import annotations

import numpy as np
import torch

from medtl.fit import Ema
from medtl.staging import StageSchedule, WarmupCosine, components_active
from medtl.strategies.base import Strategy


def count_weights(task: str, targets: np.ndarray) -> np.ndarray:
    """Eq. 4-5: w_c = N_neg,c / N_pos,c (a class absent from training counts one positive), mean 1.
    The same for every task: for multi-class data, one class against the rest."""
    targets = np.asarray(targets, dtype=np.float64)
    pos = targets.sum(axis=0)
    neg = len(targets) - pos
    w = neg / np.maximum(pos, 1.0)
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


class SPFT(Strategy):
    own_rates = "AdamW with its warm-up cosine schedule"

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        s = self.settings
        self.monitor = s["monitor"]
        self._weights = (count_weights(ctx.task, ctx.train_targets) if s["class_weights"]
                         else None)
        self.ema = Ema(float(s["ema_decay"])) if s["ema"] else None  # started when stage 2 begins
        self._epoch = 0
        self.schedule = StageSchedule.from_settings(s)

    def in_stage2(self, epoch: int) -> bool:
        """Whether class weights, their refinement and the EMA act in ``epoch``."""
        return components_active(self.settings, epoch)

    def on_epoch_start(self, epoch, optimizer, probe):
        self._epoch = epoch
        super().on_epoch_start(epoch, optimizer, probe)
        if self.ema is not None and self.ema.module is None and self.in_stage2(epoch):
            self.ema.start(self.net)  # eq. 7's θ_EMA starts as the weights stage 1 left

    def apply_freezing(self, epoch):
        self._epoch = epoch
        super().apply_freezing(epoch)

    def n_unfrozen(self, epoch: int) -> int:
        return self.schedule.n_unfrozen(epoch, self.net.n_blocks - 1)  # every block but the head's

    def trainable_blocks(self, epoch: int) -> set[int]:
        head_block = self.net.n_blocks - 1
        return set(range(head_block - self.n_unfrozen(epoch), head_block + 1))

    def stage(self, epoch: int) -> str:
        return f"{'stage2' if self.schedule.in_stage2(epoch) else 'stage1'} {super().stage(epoch)}"

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
        steps = self.ctx.steps_per_epoch
        factor = WarmupCosine(total=max(1, self.ctx.epochs * steps), warmup=int(self.settings["warmup_epochs"]) * steps)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def class_weights(self):
        if self._weights is None or not self.in_stage2(self._epoch):
            return None
        return torch.as_tensor(self._weights, dtype=torch.float32, device=self.ctx.device)

    def after_step(self):
        if self.ema is not None and self.in_stage2(self._epoch):
            self.ema.update(self.net)  # eq. 7 with the fixed ema_decay

    def ema_decay_now(self) -> float | None:
        """The decay the last EMA update used (None before the first)."""
        return None if self.ema is None else self.ema.decay_now()

    def on_validation(self, epoch, per_class_auc):
        if self._weights is not None and self.in_stage2(epoch):
            self._weights = refine_weights(self._weights, per_class_auc, float(self.settings["refine_gamma"]))

    def eval_model(self):
        return self.ema.module if self.ema is not None and self.ema.module is not None else self.net

    def uses_amp(self):
        return bool(self.settings["amp"])

    def bce_loss(self):
        return self.settings["loss"] == "bce"

    def state_dict(self):
        return {"weights": None if self._weights is None else self._weights.tolist(),
                "ema": None if self.ema is None else self.ema.state_dict()}

    def load_state_dict(self, state):
        if state.get("weights") is not None:
            self._weights = np.asarray(state["weights"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"], self.net)
