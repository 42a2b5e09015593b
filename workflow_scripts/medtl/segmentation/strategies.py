"""The segmentation strategies a config can name under ``segmentation.strategies``.

The prompt encoder is frozen under both (box prompts keep the meaning SAM gave them).

- ``ft``: plain fine-tuning: mask decoder and the whole image encoder train from the first
  epoch at one learning rate, constant, no EMA.
- ``spft``: staged progressive fine-tuning: a mask-decoder-only stage (``head_epochs``), then
  the image encoder's blocks are unfrozen from the top, one more every ``unfreeze_every``
  epochs up to ``top_k``; differential learning rates (the encoder at ``encoder_lr_ratio`` x
  the decoder's, so pretrained features move less than the new task's head); EMA of the
  weights (what gets validated and tested); cosine schedule after ``warmup_epochs``.
"""
from __future__ import annotations

from medtl.registry import Registry
from medtl.staging import DenseStrategy

SCHEDULE = {"head_epochs": 0, "top_k": "all", "unfreeze_every": 1, "progressive": True}

SEGMENTATION_STRATEGIES: Registry[DenseStrategy] = Registry("segmentation strategy")

SEGMENTATION_STRATEGIES.register("ft")(DenseStrategy(
    staged=False,
    defaults={**SCHEDULE, "ema": False, "ema_decay": 0.999, "cos_lr": False, "warmup_epochs": 0,
              "encoder_lr_ratio": 1.0},
    description="Plain fine-tuning of the mask decoder and the whole image encoder."))

SEGMENTATION_STRATEGIES.register("spft")(DenseStrategy(
    staged=True,
    defaults={**SCHEDULE, "head_epochs": 2, "top_k": 4, "ema": True, "ema_decay": 0.99, "cos_lr": True,
              "warmup_epochs": 0, "encoder_lr_ratio": 0.1},
    description="Mask-decoder-only stage, progressive unfreezing of the top encoder blocks, differential "
                "learning rates, EMA, cosine schedule."))
