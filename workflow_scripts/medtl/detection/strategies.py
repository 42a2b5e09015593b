"""The detection strategies a config can name under ``detection.strategies``.

Both run through Ultralytics' own trainer; they differ only in what the callbacks of
``medtl.detection.stages`` and a few trainer arguments do. The settings SPFT shares with
classification and segmentation have the same meaning here (``medtl.staging.SHARED``).

- ``ft``: plain fine-tuning: every layer trains from the first epoch, Ultralytics' linear
  learning-rate decay, no EMA (its decay is set to 0, so the evaluated weights are the trained
  ones), no class weights.
- ``spft``: staged progressive fine-tuning: stage 1 trains the neck and head with the backbone frozen
  (its BatchNorm statistics too); stage 2 unfreezes backbone units from the top; from stage 2, an
  EMA of the weights (what gets validated, kept and tested; eq. 7 with a fixed decay, as classification's)
  and class-aware loss weights through Ultralytics' ``cls_pw`` (inverse class frequency to
  ``class_weights_power``, mean 1) -- only where the library's loss honours them, i.e. YOLO's BCE
  classification loss. RT-DETR's varifocal loss has no class weights, so there the setting is recorded
  as not applied rather than silently claimed. Cosine learning-rate schedule (``cos_lr``).
"""
from __future__ import annotations

from medtl.registry import DeclaredRegistry
from medtl.settings import Number, Settings
from medtl.staging import SHARED, DenseStrategy, shared

DETECTION_STRATEGIES: DeclaredRegistry[DenseStrategy] = DeclaredRegistry("detection strategy")

CLASS_WEIGHTS_POWER = Number(0.5, above=0, maximum=1, doc="class weights: inverse class frequency to this power "
                                                          "(Ultralytics' cls_pw); only where the loss honours it "
                                                          "(YOLO)")

DETECTION_STRATEGIES.register("ft")(DenseStrategy(
    staged=False,
    settings=Settings(shared(class_weights=False), Settings(class_weights_power=CLASS_WEIGHTS_POWER),
                      shared(ema=False, ema_decay=0.9999, cos_lr=False)),
    description="Plain fine-tuning of every layer."))

DETECTION_STRATEGIES.register("spft")(DenseStrategy(
    staged=True,
    settings=Settings(shared(head_epochs=2, top_k=3, unfreeze_every=1, progressive=True, class_weights=True),
                      Settings(class_weights_power=CLASS_WEIGHTS_POWER),
                      shared(ema=True, ema_decay=0.9999, components_from="stage2", cos_lr=True)),
    description="Head-only stage, progressive unfreezing of backbone units, EMA, cosine schedule, "
                "class-aware loss weights where the model's loss supports them."))
