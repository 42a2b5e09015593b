"""What the workflow knows about an architecture without importing PyTorch: its name, family, parameter
blocks (how many, where known before building), default preprocessing, whether it has ImageNet weights,
and where its builder lives. Jobs build it (:func:`medtl.models.network.build_network`).

Names:

- the registered ones below (the first study's CNNs, their demo-size versions, the ViTs);
- ``timm.<model>`` and ``torchvision.<model>``: any timm or torchvision classification model, e.g.
  ``timm.convnext_tiny``, ``timm.efficientnet_b0``, ``torchvision.resnet18``; its parameter blocks come
  from the model's own grouping (:mod:`medtl.models.generic`);
- ``timm_vit.<model>``: a timm ViT with the second study's pooling and MLP head (:mod:`medtl.models.vit`).

A name of a family is checked against the model names the library's source files register (read as
text: importing timm or torchvision would cost seconds and a gigabyte while the workflow plans). Its
default preprocessing comes from the name: a trailing ``_<size>`` (``vit_small_patch16_384``) is the
crop, else 224; the resize is crop x 256 / 224. Set ``preprocess`` in the config for a model whose own
evaluation transform differs.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from medtl.registry import Registry, UnknownNameError


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture and where its blocks are.

    ``builder`` ("module:callable") is called as ``builder(num_classes=k, **options)``; ``splitter``
    ("module:callable") lists, first to last, the module-name prefixes of each parameter block of the
    built model; the last block holds ``head``, the layer replaced for the target task ("" : the
    model's own classifier, found once it is built).
    """
    builder: str
    splitter: str
    head: str
    family: str
    default_preprocess: dict = field(default_factory=lambda: {"resize": 256, "crop": 224})
    #: torchvision weights enum ("ResNet50_Weights.IMAGENET1K_V2"), "timm:<model>" or "torchvision:<model>"
    imagenet_weights: str | None = None
    options: dict = field(default_factory=dict)
    #: parameter blocks, head included; None where only the built model tells
    n_blocks: int | None = None

    def build(self, num_classes: int):
        return _load(self.builder)(num_classes=num_classes, **self.options)

    def blocks(self, net) -> list[list[str]]:
        return _load(self.splitter)(net)


def _load(dotted: str) -> Callable:
    module, name = dotted.split(":")
    return getattr(importlib.import_module(module), name)


class ArchRegistry(Registry[ArchSpec]):
    """The architecture registry, plus families of names resolved on first use:
    after ``register_family("timm.", make)``, looking up ``"timm.convnext_tiny"`` registers
    ``make("convnext_tiny")`` under that name (``make`` raises ValueError for a name it cannot
    build, and the lookup then fails with that reason)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self._families: dict[str, Callable[[str], ArchSpec]] = {}

    def register_family(self, prefix: str, make: Callable[[str], ArchSpec]) -> Callable[[str], ArchSpec]:
        self._families[prefix] = make
        return make

    def _resolve(self, name: str) -> str | None:
        """None when ``name`` is (now) registered, else why it is not."""
        if name in self._items:
            return None
        for prefix, make in self._families.items():
            if isinstance(name, str) and name.startswith(prefix) and len(name) > len(prefix):
                try:
                    self.register(name)(make(name[len(prefix):]))
                except ValueError as err:
                    return str(err)
                return None
        return ""

    def get(self, name: str) -> ArchSpec:
        why = self._resolve(name)
        if why is None:
            return super().get(name)
        raise UnknownNameError(self.why_unknown(name))

    def why_unknown(self, name: str) -> str:
        why = self._resolve(name)
        return (f"unknown {self.kind} '{name}': {why}" if why else
                f"unknown {self.kind} '{name}'; known {self.kind}s: {', '.join(self.names())}")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._resolve(name) is None

    def names(self) -> list[str]:
        return super().names() + [f"{prefix}<name>" for prefix in sorted(self._families)]


ARCHS = ArchRegistry("architecture")

# -- the registered architectures ----------------------------------------------------------------------
_TV = "medtl.models.archs"
_DEMO = {"resize": 36, "crop": 32}

ARCHS.register("resnet50")(ArchSpec(
    "torchvision.models:resnet50", f"{_TV}:resnet_blocks", head="fc", family="resnet", n_blocks=6,
    default_preprocess={"resize": 232, "crop": 224}, imagenet_weights="ResNet50_Weights.IMAGENET1K_V2"))
ARCHS.register("densenet121")(ArchSpec(
    "torchvision.models:densenet121", f"{_TV}:densenet_blocks", head="classifier", family="densenet", n_blocks=9,
    default_preprocess={"resize": 256, "crop": 224}, imagenet_weights="DenseNet121_Weights.IMAGENET1K_V1"))
ARCHS.register("vgg19")(ArchSpec(
    "torchvision.models:vgg19", f"{_TV}:vgg_blocks", head="classifier.6", family="vgg", n_blocks=6,
    default_preprocess={"resize": 256, "crop": 224}, imagenet_weights="VGG19_Weights.IMAGENET1K_V1"))
# VGG with fc6/fc7 in a block of their own before the new layer's (7 blocks; docs/fidelity.md #28)
ARCHS.register("vgg19_fc_split")(ArchSpec(
    "torchvision.models:vgg19", f"{_TV}:vgg_fc_split_blocks", head="classifier.6", family="vgg", n_blocks=7,
    default_preprocess={"resize": 256, "crop": 224}, imagenet_weights="VGG19_Weights.IMAGENET1K_V1"))
# demo sizes: the same families and block splits, small enough for a 2-core CPU at 32 px
ARCHS.register("resnet_tiny")(ArchSpec(
    f"{_TV}:TinyResNet", f"{_TV}:resnet_blocks", head="fc", family="resnet", n_blocks=6, default_preprocess=_DEMO))
ARCHS.register("densenet_tiny")(ArchSpec(
    f"{_TV}:densenet_tiny", f"{_TV}:densenet_blocks", head="classifier", family="densenet", n_blocks=9,
    default_preprocess=_DEMO))
ARCHS.register("vgg_tiny")(ArchSpec(
    f"{_TV}:TinyVGG", f"{_TV}:vgg_blocks", head="classifier.6", family="vgg", n_blocks=6, default_preprocess=_DEMO))
ARCHS.register("vgg_tiny_fc_split")(ArchSpec(
    f"{_TV}:TinyVGG", f"{_TV}:vgg_fc_split_blocks", head="classifier.6", family="vgg", n_blocks=7,
    default_preprocess=_DEMO))
# MedMNIST v2's baselines at 28 px (configs/medmnist_v2.yaml): the CIFAR stem (3x3 convolution, stride 1, no
# max-pool), from scratch; the same 6 blocks as resnet50 (stem, 4 stages, head); no ImageNet weights
_MEDMNIST = {"resize": 28, "crop": 28}
ARCHS.register("resnet18_cifar")(ArchSpec(
    f"{_TV}:resnet18_cifar", f"{_TV}:resnet_blocks", head="fc", family="resnet", n_blocks=6,
    default_preprocess=_MEDMNIST))
ARCHS.register("resnet50_cifar")(ArchSpec(
    f"{_TV}:resnet50_cifar", f"{_TV}:resnet_blocks", head="fc", family="resnet", n_blocks=6,
    default_preprocess=_MEDMNIST))

# ViTs (medtl.models.vit): embeddings, one block per transformer layer, final norm with the head.
# Layer scale as in DINOv2 (timm's vit_base_patch14_dinov2 starts it at 1e-5; loaded weights replace it);
# the demo ViT trains from scratch on a few hundred images, so its layers start less damped.
RAD_DINO_SHAPE = dict(img_size=518, patch_size=14, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                      init_values=1e-5)
VIT_TINY_SHAPE = dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0,
                      init_values=0.1)
ARCHS.register("rad_dino")(ArchSpec(
    "medtl.models.vit:build_vit", "medtl.models.vit:vit_blocks", head="head", family="vit", n_blocks=14,
    options=RAD_DINO_SHAPE,
    # RAD-DINO's image processor: shorter side to 518, centre crop 518 (37 x 37 patches of 14 px)
    default_preprocess={"resize": 518, "crop": 518}))
ARCHS.register("vit_tiny")(ArchSpec(
    "medtl.models.vit:build_vit", "medtl.models.vit:vit_blocks", head="head", family="vit", n_blocks=6,
    options=VIT_TINY_SHAPE, default_preprocess=_DEMO))


# -- any timm or torchvision classification model by name ---------------------------------------------------
_MODEL_NAME = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)?")
# "@register_model" (timm) or "@register_model()" (torchvision), other decorators, then the function
_REGISTERED = re.compile(r"^@register_model(?:\([^)]*\))?[ \t]*\n(?:@[^\n]*\n(?:[ \t)][^\n]*\n)*)*def (\w+)\(", re.M)


@functools.lru_cache(maxsize=None)
def library_models(package: str) -> dict[str, str]:
    """Model name -> the module of ``<package>/models/`` that registers it, read from the source files
    without importing the package (timm: about 1,300 names in 50 ms). Empty where the sources cannot be
    read; then names are not checked here, and the job that builds the model reports an unknown one."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return {}
    out: dict[str, str] = {}
    for path in sorted((Path(spec.submodule_search_locations[0]) / "models").glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        for name in _REGISTERED.findall(text):
            out.setdefault(name, path.stem)
    return out


def default_preprocess(model: str) -> dict:
    """crop: a trailing _<size> of the name (160-1024 px), else 224; resize: crop x 256 / 224."""
    sizes = [int(s) for s in re.findall(r"_(\d{3,4})(?=$|[._])", model) if 160 <= int(s) <= 1024]
    crop = sizes[-1] if sizes else 224
    return {"resize": round(crop * 256 / 224), "crop": crop}


def _checked(package: str, model: str, example: str) -> str:
    """The architecture name without its pretrained tag; ValueError for a name the library lacks."""
    if not _MODEL_NAME.fullmatch(model):
        raise ValueError(f"'{model}' is not a {package} model name (e.g. {example})")
    base = model.split(".")[0]
    known = library_models(package)
    if known and base not in known:
        import difflib

        close = difflib.get_close_matches(base, list(known), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"{package} has no model '{base}'{hint}")
    return base


#: timm model families (the module of ``timm/models`` that registers them) that cannot be fine-tuned here,
#: and why; ``tests/test_model_families.py`` builds one model of every family and holds this list to it
TIMM_REFUSED = {
    "volo": "its auxiliary head is added to the class head through a maximum over all tokens, which a "
            "replaced head over cached features cannot reproduce",
    "efficientvim": "its four stage classifiers are mixed by learned softmax weights outside the classifiers",
    "pit": "timm gives it no parameter grouping, and its stages pass (tokens, class token) pairs, so its "
           "parameter blocks cannot be found",
    "coat": "its blocks share modules (the convolutional position encodings), so a parameter would belong to "
            "two blocks",
}


def timm_spec(model: str) -> ArchSpec:
    base = _checked("timm", model, "timm.convnext_tiny")
    family = library_models("timm").get(base)
    if family in TIMM_REFUSED:
        raise ValueError(f"timm model '{base}' (family '{family}') cannot be used here: {TIMM_REFUSED[family]}; "
                         "choose a model of another family")
    return ArchSpec("medtl.models.generic:build_timm", "medtl.models.generic:timm_blocks", head="",
                    family=re.match(r"[a-z]*", base).group() or base, options={"model": model},
                    default_preprocess=default_preprocess(model), imagenet_weights=f"timm:{model}")


#: torchvision model families (the module of ``torchvision/models`` that defines them) whose blocks cannot be
#: found from their stride stages, and why; held to ``tests/test_model_families.py`` like ``TIMM_REFUSED``
TORCHVISION_REFUSED = {
    "googlenet": "its auxiliary classifiers run only in training mode",
    "inception": "its auxiliary classifier runs only in training mode",
    "squeezenet": "its classifier is a convolution, not a linear layer",
    "swin_transformer": "a transformer has no stride stages to find its blocks from (use timm.<name>)",
    "vision_transformer": "a transformer has no stride stages to find its blocks from (use timm.<name> or "
                          "timm_vit.<name>)",
}


def torchvision_spec(model: str) -> ArchSpec:
    if "." in model:
        raise ValueError(f"'{model}': torchvision names have no tag (its default weights are used)")
    base = _checked("torchvision", model, "torchvision.resnet18")
    family = library_models("torchvision").get(base)
    if family in TORCHVISION_REFUSED:
        raise ValueError(f"torchvision model '{base}' (family '{family}') cannot be used here: "
                         f"{TORCHVISION_REFUSED[family]}; choose a model of another family")
    return ArchSpec("medtl.models.generic:build_torchvision", "medtl.models.generic:stage_blocks", head="",
                    family=re.match(r"[a-z]*", base).group() or base, options={"model": model},
                    default_preprocess=default_preprocess(model), imagenet_weights=f"torchvision:{model}")


def timm_vit_spec(model: str) -> ArchSpec:
    """``timm_vit.<model>``: a ViT of timm's ``vision_transformer`` module, with the mean-of-patch-tokens
    features and the MLP head (:mod:`medtl.models.vit`)."""
    base = _checked("timm", model, "timm_vit.vit_small_patch16_224")
    module = library_models("timm").get(base)
    if module and module != "vision_transformer":
        raise ValueError(f"timm model '{base}' cannot be used as a ViT encoder here: it comes from timm's "
                         f"'{module}', not 'vision_transformer' (use timm.{model} for the model as timm builds it)")
    return ArchSpec("medtl.models.vit:build_timm_vit", "medtl.models.vit:vit_blocks", head="head", family="vit",
                    options={"model": model}, default_preprocess=default_preprocess(model),
                    imagenet_weights=f"timm:{model}")


ARCHS.register_family("timm.", timm_spec)
ARCHS.register_family("torchvision.", torchvision_spec)
ARCHS.register_family("timm_vit.", timm_vit_spec)
