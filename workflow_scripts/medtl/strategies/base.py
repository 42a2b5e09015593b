"""What a fine-tuning strategy controls, and the defaults most strategies keep.

The trainer owns the loop (batches, evaluation, early stopping, checkpoints);
a strategy decides which parameters train in each epoch, with which optimizer
and rates, what is added to the loss, and which weights are evaluated.
Adding a strategy = one module with a subclass, and its declaration (settings, what trains) in
``medtl.strategies.declarations``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medtl.models.network import Network
from medtl.staging import WarmupCosine


@dataclass
class Context:
    """What a strategy may look at: the network, its starting point and the run's settings."""
    net: Network
    init_state: dict[str, torch.Tensor]  # parameters at the start of fine-tuning, by name
    lr: float
    epochs: int
    steps_per_epoch: int
    task: str
    train_targets: Any  # (n, n_classes) 0/1 numpy array
    optimizer: str = "adam"
    weight_decay: float = 0.0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: mode of the frozen blocks' BatchNorm and dropout: "eval" (statistics fixed, as linear probing
    #: defines it) or "train" (statistics adapt: the first study's authors call model.train())
    frozen_bn: str = "eval"
    #: ``training.schedule`` (schemas/config.schema.yaml): the rate over the run; None = constant
    schedule: dict | None = None


@dataclass
class MultiStep:
    """The learning-rate factor of optimizer step ``step``: ``gamma`` to the number of ``milestones`` (epochs,
    counted from 0) reached by the step's epoch, i.e. torch's ``MultiStepLR`` stepped once per epoch (MedMNIST v2's
    schedule). A callable object rather than a closure, so that ``LambdaLR`` saves it with the scheduler's state."""
    steps_per_epoch: int
    milestones: tuple[int, ...]
    gamma: float = 0.1

    def __call__(self, step: int) -> float:
        epoch = step // max(1, self.steps_per_epoch)
        return self.gamma ** sum(epoch >= m for m in self.milestones)


def schedule_type(schedule: dict | None) -> str:
    return (schedule or {}).get("type", "constant")


def lr_factor(schedule: dict | None, epochs: int, steps_per_epoch: int):
    """The factor of the base rates at each optimizer step under ``training.schedule`` (its settings as the schema
    declares them), or None for a constant rate."""
    kind = schedule_type(schedule)
    if kind == "constant":
        return None
    steps = max(1, int(steps_per_epoch))
    if kind == "multistep":
        return MultiStep(steps, tuple(int(m) for m in schedule["milestones"]), float(schedule.get("gamma", 0.1)))
    if kind == "cosine":
        return WarmupCosine(total=max(1, int(epochs) * steps), warmup=int(schedule.get("warmup_epochs", 0)) * steps)
    raise ValueError(f"training.schedule: unknown type '{kind}'; use constant, multistep or cosine")


class Strategy:
    """Built by its declaration (``STRATEGIES.get(name)(ctx, **settings)``), which checks the config's
    settings and fills in the defaults: ``settings`` here is complete and valid."""
    #: metric for early stopping, None = the dataset's primary metric
    monitor: str | None = None
    #: how a strategy that sets its learning rates itself does so: it takes no ``training.schedule`` but constant
    own_rates: str | None = None
    #: a strategy that trains nothing (``knn``): instead of running the trainer, the job gives it the backbone's
    #: features (``medtl.training.job.fit_without_training``) and writes the same files as every job
    without_training = False

    def __init__(self, ctx: Context, settings: dict[str, Any]):
        self.ctx = ctx
        self.settings = dict(settings)
        self.net = ctx.net
        if self.own_rates and schedule_type(ctx.schedule) != "constant":
            raise ValueError(f"training.schedule: {schedule_type(ctx.schedule)} cannot apply to strategy "
                             f"{type(self).__name__}, which sets its learning rates itself ({self.own_rates}); "
                             "leave training.schedule unset (constant) in a config with this strategy")

    # -- which parameters train -------------------------------------------------
    def trainable_blocks(self, epoch: int) -> set[int] | None:
        """Block indices whose parameters train in ``epoch``; None = all. The head always trains."""
        return None

    def apply_freezing(self, epoch: int) -> None:
        blocks = self.trainable_blocks(epoch)
        for name, block, is_head, p in self.net.named_block_parameters():
            p.requires_grad_(blocks is None or is_head or block in blocks)

    def set_train_mode(self) -> None:
        """Train mode, except for fully frozen blocks: their BatchNorm statistics and dropout stay fixed
        (``frozen_bn: eval``), or adapt like everything else (``frozen_bn: train``)."""
        self.net.train()
        if self.ctx.frozen_bn == "train":
            return
        frozen = {b for n, b, h, p in self.net.named_block_parameters()} - self._blocks_with_grad()
        for b in frozen:
            for m in self.net.block_modules(b):
                m.eval()

    #: this run has epochs that train only the head on a frozen backbone (LP, LP-FT's first stage): set from the
    #: declaration's ``frozen_backbone_when`` when the registry builds the strategy (StrategySpec.__call__)
    frozen_backbone = False

    def backbone_frozen(self, epoch: int) -> bool:
        """Whether ``epoch`` trains only the head, everything before it frozen."""
        return False

    def backbone_unchanged(self, epoch: int) -> bool:
        """Whether ``epoch`` leaves the backbone exactly as it was: frozen, and in eval mode (``frozen_bn: eval``),
        so that its BatchNorm statistics do not move either. Cached backbone features can then stand in for it."""
        return self.ctx.frozen_bn == "eval" and self.frozen_backbone and self.backbone_frozen(epoch)

    def _blocks_with_grad(self) -> set[int]:
        return {b for n, b, h, p in self.net.named_block_parameters() if p.requires_grad}

    def stage(self, epoch: int) -> str:
        """What trains in ``epoch``, in a word or two (the job's log, history.csv): "all", "head", "head+2"
        (the head and two more blocks)."""
        blocks = self.trainable_blocks(epoch)
        head = self.net.n_blocks - 1
        if blocks is None or len(blocks | {head}) == self.net.n_blocks:
            return "all"
        others = len(blocks - {head})
        return f"head+{others}" if others else "head"

    # -- optimisation -------------------------------------------------------------
    def param_groups(self) -> list[dict]:
        return [{"params": [p for p in self.net.parameters()], "lr": self.ctx.lr}]

    def build_optimizer(self) -> torch.optim.Optimizer:
        # One optimizer over every parameter for the whole run: frozen ones simply have
        # no gradient and are skipped, so unfreezing needs no rebuild and schedules carry on.
        groups = self.param_groups()
        name = self.ctx.optimizer.lower()
        if name == "adam":
            return torch.optim.Adam(groups, lr=self.ctx.lr, weight_decay=self.ctx.weight_decay)
        if name == "adamw":
            return torch.optim.AdamW(groups, lr=self.ctx.lr, weight_decay=self.ctx.weight_decay)
        if name == "sgd":
            return torch.optim.SGD(groups, lr=self.ctx.lr, momentum=0.9, weight_decay=self.ctx.weight_decay)
        raise ValueError(f"unknown optimizer '{self.ctx.optimizer}'; use adam, adamw or sgd")

    def build_scheduler(self, optimizer: torch.optim.Optimizer):
        """``training.schedule``, stepped after every optimizer step; None (no scheduler) for a constant rate."""
        factor = lr_factor(self.ctx.schedule, self.ctx.epochs, self.ctx.steps_per_epoch)
        return None if factor is None else torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def on_epoch_start(self, epoch: int, optimizer: torch.optim.Optimizer, probe) -> None:
        """Called before each epoch; ``probe()`` runs forward/backward on one training batch."""
        self.apply_freezing(epoch)

    # -- loss -----------------------------------------------------------------------
    def class_weights(self) -> torch.Tensor | None:
        return None

    def penalty(self) -> torch.Tensor | float:
        return 0.0

    def after_step(self) -> None:
        pass

    def on_validation(self, epoch: int, per_class_auc: list[float]) -> None:
        pass

    # -- evaluation -----------------------------------------------------------------
    def eval_model(self) -> nn.Module:
        return self.net

    def uses_amp(self) -> bool:
        return False

    def bce_loss(self) -> bool:
        """Train with a per-class binary cross-entropy whatever the task (multi-class: on one-hot targets);
        predictions stay the task's (softmax for multi-class)."""
        return False

    # -- resume ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def describe(self) -> dict:
        """Resolved settings, written next to the job's results."""
        return dict(self.settings)


class FixedBatchNormStatistics:
    """For strategies that keep the pretrained weights and train a few parameters beside the head (LoRA, DoRA,
    BitFit): with ``frozen_bn: eval`` the backbone's BatchNorm layers stay in eval mode, their statistics as
    pretrained, so that the pretrained network changes only in what the strategy trains (dropout, LoRA's too,
    stays in train mode); ``frozen_bn: train`` lets the statistics adapt."""

    def set_train_mode(self) -> None:
        super().set_train_mode()
        if self.ctx.frozen_bn != "eval":
            return
        for name, module in self.net.net.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not self.net.is_head(name):
                module.eval()
