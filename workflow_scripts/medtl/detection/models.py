"""Detector kinds, their configs, and the backbone units SPFT unfreezes.

A config's ``detection.models`` entry names a kind (``type``), a model YAML (``cfg``) and
optional starting weights. YAML names are looked up first among the configs shipped here
(``cfg/``, e.g. ``rtdetr-tiny.yaml``), then among Ultralytics' own (``yolov8n.yaml``,
``rtdetr-l.yaml``); anything else is taken as a path. Nothing here imports Ultralytics at
module level: the workflow reads this registry when it parses the config.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from medtl.registry import Registry
from medtl.settings import Bool, Choice, Int, Number, Settings, Table, Text

PACKAGED_CFG = Path(__file__).resolve().parent / "cfg"


@dataclass(frozen=True)
class DetectorSpec:
    trainer: str          # dotted path of the Ultralytics trainer class
    model: str            # dotted path of the Ultralytics model class used to evaluate and predict
    default_cfg: str
    class_weights: bool   # whether the library's loss honours per-class weights (cls_pw)
    description: str = ""

    def trainer_class(self):
        return _load(self.trainer)

    def model_class(self):
        return _load(self.model)


def _load(dotted: str):
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


DETECTORS: Registry[DetectorSpec] = Registry("detector")

DETECTORS.register("yolo")(DetectorSpec(
    trainer="ultralytics.models.yolo.detect.DetectionTrainer", model="ultralytics.YOLO",
    default_cfg="yolov8n.yaml", class_weights=True,
    description="Ultralytics YOLO (v8 by default): CNN backbone, PAN neck, anchor-free head; "
                "its BCE classification loss takes per-class weights."))

DETECTORS.register("rtdetr")(DetectorSpec(
    trainer="ultralytics.models.rtdetr.train.RTDETRTrainer", model="ultralytics.RTDETR",
    default_cfg="rtdetr-l.yaml", class_weights=False,
    description="Ultralytics RT-DETR: HGNetv2 backbone, AIFI encoder, CCFM neck, transformer decoder; its "
                "varifocal/Hungarian loss has no per-class weights, so class-aware weighting does not apply."))


# What a job uses for a training setting its config slice leaves out (``detection.training``, with a
# model's own ``training`` over it); the workflow's schema carries the same defaults
# (tests/test_detection.py keeps the two in step).
TRAINING = Settings(
    epochs=Int(100, minimum=1, doc="training epochs"),
    batch_size=Int(16, minimum=1, doc="images per batch"),
    imgsz=Int(None, minimum=32, nullable=True, doc="network input side; null: the prepared size"),
    optimizer=Choice("AdamW", choices=("SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSProp"), doc="optimizer"),
    lr0=Number(0.001, above=0, doc="initial learning rate"),
    lrf=Number(0.01, above=0, doc="final learning rate, as a fraction of lr0"),
    momentum=Number(0.937, minimum=0, doc="SGD momentum / Adam beta1"),
    weight_decay=Number(0.0005, minimum=0, doc="weight decay"),
    warmup_epochs=Number(3.0, minimum=0, doc="warm-up epochs"),
    nbs=Int(64, minimum=1, doc="nominal batch size: gradients accumulate to it"),
    patience=Int(100, minimum=1, doc="epochs without a gain before stopping"),
    device=Text("auto", pattern=r"auto|cpu|cuda(:[0-9]+)?", meaning="auto, cpu, cuda or cuda:<index>",
                doc="where the job trains"),
    workers=Int(4, minimum=0, doc="data-loading worker processes"),
    amp=Bool(True, doc="bf16 autocast on a GPU; never on a CPU"),
    deterministic=Bool(True, doc="deterministic algorithms"),
    eval_batch_size=Int(32, minimum=1, doc="images per evaluation batch"),
    predict_conf=Number(0.05, minimum=0, maximum=1, doc="lowest score of a saved test prediction"),
    augment=Table({}, doc="Ultralytics augmentation arguments (mosaic, fliplr, scale, ...)"),
)


def resolve_cfg(cfg: str) -> str:
    """A packaged YAML's path, else the name as given (Ultralytics resolves its own names and paths)."""
    packaged = PACKAGED_CFG / cfg
    return str(packaged) if packaged.is_file() else cfg


def backbone_units(model, imgsz: int = 64) -> list[list[int]]:
    """Indices of the backbone layers, grouped bottom-up into units of equal output stride.

    The backbone is the YAML's ``backbone`` section (everything after it -- neck, encoder,
    detection head or decoder -- is the *head* that SPFT always trains). A unit starts at each
    layer that lowers the resolution, so YOLOv8 gives [0] [1, 2] [3, 4] [5, 6] [7, 8, 9]
    (stem, then the P2..P5 stages with SPPF) and RT-DETR-l [0, 1] [2, 3] [4..7] [8, 9].
    Found by one forward pass of a blank image, which works for any Ultralytics YAML.
    """
    import torch

    n = len(model.yaml["backbone"])
    widths: dict[int, int] = {}
    hooks = [model.model[i].register_forward_hook(
        lambda _m, _in, out, i=i: widths.__setitem__(i, out.shape[-1])) for i in range(n)]
    training = model.training
    try:
        model.eval()
        p = next(model.parameters())
        with torch.no_grad():
            model.predict(torch.zeros(1, int(model.yaml.get("ch", 3)), imgsz, imgsz, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(training)
    units: list[list[int]] = []
    for i in range(n):
        if not units or widths[i] < widths[units[-1][-1]]:
            units.append([i])
        else:
            units[-1].append(i)
    return units


def layer_prefix(i: int) -> str:
    """Parameter-name prefix of layer ``i`` (the trailing dot keeps layer 1 from matching 10..19)."""
    return f"model.{i}."
