"""Starting weights for fine-tuning: ImageNet (torchvision's, or timm's for ``timm.*`` and ``timm_vit.*``,
fetched once into a cache by a local rule), a Hugging Face hub checkpoint (``hub``: RAD-DINO), the pipeline's own
pretraining, a user checkpoint, or none."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from medtl.io import atomic_path
from medtl.models.network import ARCHS, build_network


def read_weights(weights_file: str | os.PathLike) -> tuple[dict, dict | None]:
    """A weights file of this module: the backbone state dict, and the input statistics the weights were trained
    with when their owner publishes them (``{"mean": [...], "std": [...]}``; a hub encoder's
    preprocessor_config.json), else None."""
    saved = torch.load(weights_file, map_location="cpu", weights_only=True)
    if isinstance(saved, dict) and set(saved) == {"backbone", "input_statistics"}:
        return saved["backbone"], saved["input_statistics"]
    return saved, None


def load_weights(net, weights_file: str | os.PathLike | None) -> None:
    """Load a weights file of this module (a backbone state dict) into ``net``; None: keep its init."""
    if weights_file:
        net.load_backbone(read_weights(weights_file)[0])


def save_backbone(state: dict, out: str | os.PathLike, input_statistics: dict | None = None) -> None:
    """The backbone's state dict; with ``input_statistics``, the mean and SD its inputs were normalised with."""
    with atomic_path(out) as tmp:
        torch.save(state if input_statistics is None else {"backbone": state, "input_statistics": input_statistics},
                   tmp)


def input_normalization(normalize: dict | str, weights_file: str | os.PathLike | None) -> tuple[list, list]:
    """The per-channel mean and SD a job normalises its inputs with: ``training.normalize``'s, or with
    ``normalize: weights`` (a hub encoder's default) those its weights file carries from the owner's
    preprocessor_config.json."""
    if normalize != "weights":
        return list(normalize["mean"]), list(normalize["std"])
    stats = read_weights(weights_file)[1] if weights_file else None
    if stats is None:
        raise ValueError(f"training.normalize is 'weights', but the weights file {weights_file} carries no input "
                         "statistics (only a hub encoder's, from its preprocessor_config.json, does): set "
                         "training.normalize to {mean: [...], std: [...]}")
    return list(stats["mean"]), list(stats["std"])


def fetch_imagenet(arch: str, out: str | os.PathLike, cache_dir: str | os.PathLike) -> None:
    """torchvision's ImageNet weights, read by torchvision's own model builder (``weights=``: the download,
    checked against the published hash, and the builder's fixes for legacy files, such as DenseNet's
    ``norm.1`` key names), cached in ``cache_dir``."""
    from torchvision import models
    from torchvision.models import get_weight

    spec = ARCHS.get(arch)
    if not spec.imagenet_weights:
        raise ValueError(f"architecture '{arch}' has no ImageNet weights; use weights type 'pretrain' or 'none'")
    if spec.imagenet_weights.startswith("timm:"):
        return fetch_timm(arch, spec.imagenet_weights.removeprefix("timm:"), out, cache_dir)
    os.environ["TORCH_HOME"] = str(Path(cache_dir).resolve())
    print(f"[weights] fetching {spec.imagenet_weights} into {cache_dir}", file=sys.stderr, flush=True)
    # the torchvision builder of the architecture: torchvision.<model>'s, or the registered one's
    builder = spec.options.get("model") or spec.builder.rsplit(":", 1)[1]
    try:
        if spec.imagenet_weights.startswith("torchvision:"):  # torchvision.<model>: its default weights
            weights = models.get_model_weights(builder).DEFAULT
        else:
            weights = get_weight(spec.imagenet_weights)
        pretrained = models.get_model(builder, weights=weights)
    except Exception as err:  # URLError, hash mismatch, ...
        raise RuntimeError(f"could not fetch ImageNet weights for {arch} ({spec.imagenet_weights}): {err}. "
                           f"This needs internet on the machine running the local rule; or download them "
                           f"elsewhere and use weights type 'checkpoint'.") from None
    net = build_network(arch, 1000)
    net.net.load_state_dict(pretrained.state_dict())
    save_backbone(net.backbone_state(), out)


def import_checkpoint(arch: str, path: str | os.PathLike, out: str | os.PathLike) -> None:
    """A user's checkpoint (a state dict, or {'state_dict': ...}), checked against the architecture."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; fix 'weights.path' for architecture '{arch}'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"checkpoint {path} cannot be read as a PyTorch state dict: {err}") from None
    state = state.get("state_dict", state)
    state = {k.removeprefix("module.").removeprefix("net."): v for k, v in state.items()}
    net = build_network(arch, 2)
    net.load_backbone(state)  # names the mismatch if it is for another architecture
    save_backbone(net.backbone_state(), out)


def _hf_cache(cache_dir: str | os.PathLike) -> Path:
    """The Hugging Face cache beside the torch one (``results/cache/huggingface``)."""
    return Path(cache_dir).resolve().parent / "huggingface"


def fetch_timm(arch: str, model: str, out: str | os.PathLike, cache_dir: str | os.PathLike) -> None:
    """timm's default pretrained weights of ``model`` (from the Hugging Face hub), read by timm's own
    ``create_model(pretrained=True)``, whose classifier reset drops every classifier of the file (two for
    distilled models), as the backbone of ``arch``."""
    import timm
    from timm.models import is_model_pretrained

    # the workflow checked the name against timm's sources as text; here timm itself answers
    if not timm.is_model(model):
        raise ValueError(f"architecture '{arch}': timm has no model '{model}' (timm {timm.__version__}; "
                         "see timm.list_models())")
    if not is_model_pretrained(model):
        raise ValueError(f"architecture '{arch}': timm has no pretrained weights for '{model}'; use weights type "
                         "'pretrain', 'checkpoint' or 'none'")
    cache = _hf_cache(cache_dir)
    print(f"[weights] fetching timm '{model}' into {cache}", file=sys.stderr, flush=True)
    try:
        pretrained = timm.create_model(model, pretrained=True, num_classes=2, cache_dir=str(cache))
    except Exception as err:
        raise RuntimeError(f"could not fetch timm's pretrained weights for '{model}': {err}. This needs internet "
                           f"on the machine running the local rule (or a filled cache in {cache}; set "
                           f"HF_HUB_OFFLINE=1 to use it without a network); or use weights type 'checkpoint'."
                           ) from None
    state = pretrained.state_dict()
    net = build_network(arch, 2)
    own = net.net.state_dict()
    if "norm.weight" in own and "norm.weight" not in state and "fc_norm.weight" in state:
        # pretrained with the norm after pooling: here it is applied to every token before pooling
        state = {("norm" + k[len("fc_norm"):] if k.startswith("fc_norm.") else k): v for k, v in state.items()}
    from medtl.models.vit import fit_pos_embed

    net.load_backbone(fit_pos_embed(state, net.net))
    save_backbone(net.backbone_state(), out)


#: what a hub encoder's repository must hold, as its model card names them (microsoft/rad-dino: "model.safetensors"
#: with "config.json" for transformers; the repository's other weights files -- backbone_compatible.safetensors
#: for the DINOv2 code, dino_head.safetensors -- are not read)
HUB_FILES = ["config.json", "model.safetensors", "preprocessor_config.json"]


def fetch_hub(arch: str, weights: dict, out: str | os.PathLike, cache_dir: str | os.PathLike) -> None:
    """A DINOv2 encoder from the Hugging Face hub (``repo``, default: the architecture's, e.g.
    ``microsoft/rad-dino``; optional ``revision``; or ``path``, a local clone or snapshot folder), read by its
    owner's loader, transformers' ``Dinov2Model.from_pretrained`` (``config.json`` + ``model.safetensors``),
    converted to timm names and checked against the architecture (its config, then every backbone tensor,
    shapes included). A download goes into the Hugging Face cache beside ``cache_dir``; with
    ``HF_HUB_OFFLINE=1`` a filled cache is used without a network."""
    from medtl.models.vit import HUB_REPOS, check_dinov2_config, dinov2_to_timm, fit_pos_embed

    repo = weights.get("repo") or HUB_REPOS.get(arch)
    kwargs: dict = {}
    if weights.get("path"):  # a local copy of the repository (git clone or snapshot folder): no download
        source = Path(weights["path"])
        if not source.is_dir():
            raise FileNotFoundError(f"hub weights path {source} is not a folder; fix 'weights.path' for '{arch}'")
        missing = [f for f in HUB_FILES[:2] if not (source / f).is_file()]
        if missing:
            raise FileNotFoundError(f"hub weights path {source} lacks {', '.join(missing)} (a clone of the hub "
                                    f"repository holds them; with git, run 'git lfs pull' for the weights file)")
        where = str(source)
    elif not repo:
        raise ValueError(f"weights type 'hub' for architecture '{arch}' needs a 'repo' (e.g. microsoft/rad-dino)")
    else:
        cache = _hf_cache(cache_dir)
        print(f"[weights] fetching {repo}@{weights.get('revision') or 'main'} into {cache}", file=sys.stderr,
              flush=True)
        source, where = repo, f"{repo} (Hugging Face hub)"
        kwargs = {"revision": weights.get("revision"), "cache_dir": str(cache)}
    net = build_network(arch, 2)
    try:
        from transformers import Dinov2Config, Dinov2Model

        config = Dinov2Config.from_pretrained(str(source), **kwargs)
        check_dinov2_config(config.to_dict(), net.net, arch)  # before any tensor is read
        model, info = Dinov2Model.from_pretrained(str(source), config=config, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as err:
        if "does not fit architecture" in str(err):
            raise
        hint = ("This needs internet on the machine running the local rule (or a filled cache; set "
                "HF_HUB_OFFLINE=1 to use it without a network), or set 'path' to a local copy." if kwargs
                else "Is it a clone of a DINOv2 repository of the hub?")
        raise RuntimeError(f"could not load the DINOv2 encoder from {where}: {err}. {hint}") from None
    if info.get("missing_keys"):  # transformers would start them from random values: never silently
        raise ValueError(f"{where}: model.safetensors lacks {len(info['missing_keys'])} of the encoder's tensors, "
                         f"e.g. {info['missing_keys'][:3]}; is it a DINOv2 checkpoint?")
    net.load_backbone(fit_pos_embed(dinov2_to_timm(model.state_dict()), net.net))
    save_backbone(net.backbone_state(), out, hub_input_statistics(source, where, kwargs))


def hub_input_statistics(source, where: str, kwargs: dict) -> dict:
    """The input mean and SD of a hub encoder, from its preprocessor_config.json read by its owner's loader
    (transformers' ``AutoImageProcessor``; RAD-DINO's: mean 0.5307, SD 0.2583 per channel, not ImageNet's)."""
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(str(source), **kwargs)
    except (OSError, ValueError) as err:
        raise RuntimeError(f"could not read the image processor (preprocessor_config.json) of {where}: {err}. The "
                           "encoder's input statistics come from it; the hub repository holds it") from None
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    if mean is None or std is None:
        raise ValueError(f"{where}: preprocessor_config.json gives no image_mean / image_std")
    mean, std = ([float(v)] * 3 if isinstance(v, (int, float)) else [float(x) for x in v] for v in (mean, std))
    return {"mean": mean, "std": std}
