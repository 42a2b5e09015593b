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

from medtl.registry import DeclaredRegistry
from medtl.settings import Bool, Number, Settings
from medtl.staging import DenseStrategy, schedule_settings

DETECTION_STRATEGIES: DeclaredRegistry[DenseStrategy] = DeclaredRegistry("detection strategy")


def _settings(ema: bool, cos_lr: bool, class_weights: float, **schedule) -> Settings:
    return Settings(
        schedule_settings(**schedule),
        ema=Bool(ema, doc="validate, keep and test an exponential moving average of the weights"),
        ema_decay=Number(0.9999, minimum=0, below=1, doc="the EMA's decay (Ultralytics ModelEMA)"),
        ema_tau=Number(2000, above=0, doc="updates over which the EMA's decay warms up"),
        cos_lr=Bool(cos_lr, doc="cosine learning-rate schedule (false: linear decay)"),
        class_weights=Number(class_weights, minimum=0, doc="inverse class frequency to this power (cls_pw); "
                                                            "only where the loss honours it (YOLO)"),
    )


DETECTION_STRATEGIES.register("ft")(DenseStrategy(
    staged=False, settings=_settings(ema=False, cos_lr=False, class_weights=0.0),
    description="Plain fine-tuning of every layer."))

DETECTION_STRATEGIES.register("spft")(DenseStrategy(
    staged=True, settings=_settings(ema=True, cos_lr=True, class_weights=0.5, head_epochs=2, top_k=3),
    description="Head-only stage, progressive unfreezing of backbone units, EMA, cosine schedule, "
                "class-aware loss weights where the model's loss supports them."))
