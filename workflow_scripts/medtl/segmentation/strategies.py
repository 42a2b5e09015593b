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

from medtl.registry import DeclaredRegistry
from medtl.settings import Bool, Int, Number, Settings
from medtl.staging import DenseStrategy, schedule_settings

SEGMENTATION_STRATEGIES: DeclaredRegistry[DenseStrategy] = DeclaredRegistry("segmentation strategy")


def _settings(ema: bool, ema_decay: float, cos_lr: bool, encoder_lr_ratio: float, **schedule) -> Settings:
    return Settings(
        schedule_settings(**schedule),
        ema=Bool(ema, doc="validate and test an exponential moving average of the weights"),
        ema_decay=Number(ema_decay, minimum=0, below=1, doc="the EMA's decay"),
        cos_lr=Bool(cos_lr, doc="cosine learning-rate schedule after the warm-up (false: constant)"),
        warmup_epochs=Int(0, minimum=0, doc="linear warm-up epochs"),
        encoder_lr_ratio=Number(encoder_lr_ratio, minimum=0, doc="the image encoder's learning rate, as a "
                                                                  "fraction of the mask decoder's"),
    )


SEGMENTATION_STRATEGIES.register("ft")(DenseStrategy(
    staged=False, settings=_settings(ema=False, ema_decay=0.999, cos_lr=False, encoder_lr_ratio=1.0),
    description="Plain fine-tuning of the mask decoder and the whole image encoder."))

SEGMENTATION_STRATEGIES.register("spft")(DenseStrategy(
    staged=True, settings=_settings(ema=True, ema_decay=0.99, cos_lr=True, encoder_lr_ratio=0.1, head_epochs=2,
                                    top_k=4),
    description="Mask-decoder-only stage, progressive unfreezing of the top encoder blocks, differential "
                "learning rates, EMA, cosine schedule."))
