"""The detection strategies a config can name under ``detection.strategies``.

Both run through Ultralytics' own trainer; they differ only in what the callbacks of
``medtl.detection.stages`` and a few trainer arguments do:

- ``ft``: plain fine-tuning: every layer trains from the first epoch, Ultralytics' linear
  learning-rate decay, no EMA (its decay is set to 0, so the evaluated weights are the trained
  ones), no class weights.
- ``spft``: staged progressive fine-tuning: head-only stage with the backbone frozen (its
  BatchNorm statistics too), then progressive unfreezing of backbone units from the top; EMA
  of the weights (what gets validated, kept and tested); cosine learning-rate schedule
  (``cos_lr``); class-aware weighting through Ultralytics' ``cls_pw`` (inverse class
  frequency to that power, mean 1) -- only where the library's loss honours it, i.e. YOLO's
  BCE classification loss. RT-DETR's varifocal loss has no class weights, so there the
  setting is recorded as not applied rather than silently claimed.
"""
from __future__ import annotations

from medtl.registry import Registry
from medtl.staging import DenseStrategy

SCHEDULE = {"head_epochs": 0, "top_k": "all", "unfreeze_every": 1, "progressive": True}

DETECTION_STRATEGIES: Registry[DenseStrategy] = Registry("detection strategy")

DETECTION_STRATEGIES.register("ft")(DenseStrategy(
    staged=False,
    defaults={**SCHEDULE, "ema": False, "ema_decay": 0.9999, "ema_tau": 2000, "cos_lr": False, "class_weights": 0.0},
    description="Plain fine-tuning of every layer."))

DETECTION_STRATEGIES.register("spft")(DenseStrategy(
    staged=True,
    defaults={**SCHEDULE, "head_epochs": 2, "top_k": 3, "ema": True, "ema_decay": 0.9999, "ema_tau": 2000,
              "cos_lr": True, "class_weights": 0.5},
    description="Head-only stage, progressive unfreezing of backbone units, EMA, cosine schedule, "
                "class-aware loss weights where the model's loss supports them."))
