"""The segmentation strategies a config can name under ``segmentation.strategies``.

The prompt encoder is frozen under both (box prompts keep the meaning SAM gave them). The settings
SPFT shares with classification and detection have the same meaning here (``medtl.staging.SHARED``).

- ``ft``: plain fine-tuning: mask decoder and the whole image encoder train from the first
  epoch at one learning rate, constant, no EMA.
- ``spft``: staged progressive fine-tuning: a mask-decoder-only stage (``head_epochs``), then
  the image encoder's blocks are unfrozen from the top, one more every ``unfreeze_every``
  epochs up to ``top_k``; differential learning rates (the encoder at ``encoder_lr_ratio`` x
  the decoder's, so pretrained features move less than the new task's head); from stage 2 an EMA
  of the weights (what gets validated and tested); cosine schedule after ``warmup_epochs``.
"""
from __future__ import annotations

from medtl.registry import DeclaredRegistry
from medtl.settings import Settings
from medtl.staging import DenseStrategy, shared

SEGMENTATION_STRATEGIES: DeclaredRegistry[DenseStrategy] = DeclaredRegistry("segmentation strategy")

SEGMENTATION_STRATEGIES.register("ft")(DenseStrategy(
    staged=False,
    settings=shared(ema=False, ema_decay=0.999, cos_lr=False, warmup_epochs=0, encoder_lr_ratio=1.0),
    description="Plain fine-tuning of the mask decoder and the whole image encoder."))

SEGMENTATION_STRATEGIES.register("spft")(DenseStrategy(
    staged=True,
    settings=Settings(shared(head_epochs=2, top_k=4, unfreeze_every=1, progressive=True),
                      shared(ema=True, ema_decay=0.99, components_from="stage2", cos_lr=True, warmup_epochs=0,
                             encoder_lr_ratio=0.1)),
    description="Mask-decoder-only stage, progressive unfreezing of the top encoder blocks, differential "
                "learning rates, EMA, cosine schedule."))
