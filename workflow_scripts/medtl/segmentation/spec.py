"""What the workflow knows about segmentation models without importing PyTorch: the SAM image encoders
a config can name, and the declaration of the training settings a model may override (its
``training`` entry over the section's ``segmentation.training``)."""
from __future__ import annotations

from dataclasses import dataclass

from medtl.registry import Registry
from medtl.settings import Bool, Int, Number, Settings, Text

DEVICE = Text("auto", pattern=r"auto|cpu|cuda(:[0-9]+)?", meaning="auto, cpu, cuda or cuda:<index>",
              doc="where the job trains")


@dataclass(frozen=True)
class EncoderSpec:
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    description: str = ""
    #: "sam": segment-anything's ViT image encoder; "sam2": SAM 2's Hiera, built from ``config`` of the sam2 package
    family: str = "sam"
    config: str = ""

    @property
    def size_multiple(self) -> int:
        """``img_size`` must be a multiple of this: the patch size (SAM), the trunk's total stride (SAM 2)."""
        return 32 if self.family == "sam2" else 16


ENCODERS: Registry[EncoderSpec] = Registry("SAM image encoder")
ENCODERS.register("vit_b")(EncoderSpec(768, 12, 12, (2, 5, 8, 11), description="SAM ViT-B (official, 91M)"))
ENCODERS.register("vit_l")(EncoderSpec(1024, 24, 16, (5, 11, 17, 23), description="SAM ViT-L (official, 308M)"))
ENCODERS.register("vit_h")(EncoderSpec(1280, 32, 16, (7, 15, 23, 31), description="SAM ViT-H (official, 636M)"))
ENCODERS.register("vit_tiny")(EncoderSpec(96, 4, 3, (1, 3), window_size=4,
                                          description="demo only: SAM's ViT at width 96, depth 4"))
# SAM 2.1 (the sam2 package's own configs; its image path only: Hiera trunk, FPN neck, prompt encoder, mask
# decoder with high-resolution features; the video memory is left out)
ENCODERS.register("sam2.1_hiera_tiny")(EncoderSpec(
    96, 12, 1, (5, 7, 9), family="sam2", config="configs/sam2.1/sam2.1_hiera_t.yaml",
    description="SAM 2.1 Hiera-T (official, 39M with the video memory, 31M without)"))
ENCODERS.register("sam2.1_hiera_small")(EncoderSpec(
    96, 16, 1, (7, 10, 13), family="sam2", config="configs/sam2.1/sam2.1_hiera_s.yaml",
    description="SAM 2.1 Hiera-S (official, 46M with the video memory)"))

MODEL_DEFAULTS = {"encoder": "vit_b", "img_size": 1024}

# What a job uses for a setting its config slice leaves out; the workflow's schema carries the
# same defaults (tests/test_segmentation.py keeps the two in step).
TRAINING = Settings(
    epochs=Int(20, minimum=1, doc="training epochs"),
    batch_size=Int(4, minimum=1, doc="images per training batch"),
    eval_batch_size=Int(8, minimum=1, doc="images per evaluation batch"),
    lr=Number(0.0001, above=0, doc="the mask decoder's learning rate; the encoder's is encoder_lr_ratio x this"),
    weight_decay=Number(0.01, minimum=0, doc="AdamW's weight decay"),
    box_jitter=Number(0.1, minimum=0, doc="box sides move by up to this fraction of the box in training"),
    patience=Int(100, minimum=0, doc="epochs in a row without a gain in validation Dice before stopping (0: never)"),
    dice_weight=Number(1.0, minimum=0, doc="weight of the Dice loss"),
    bce_weight=Number(1.0, minimum=0, doc="weight of the binary cross-entropy"),
    device=DEVICE,
    amp=Bool(True, doc="bf16 autocast on a GPU; never on a CPU"),
)
