"""Where a dense model's starting weights come from (a ``detection.models`` or ``segmentation.models``
entry's ``weights``), and the released checkpoints a study starts from.

- ``{type: none}``: the model's random initialisation;
- ``{type: pretrain, dataset, epochs, lr, batch_size, seed}``: pretrained by the pipeline on one of the
  task's ``source_datasets`` (rules ``pretrain_detector``, ``pretrain_sam``), the way classification
  pretrains on ``synth_source``: the embedded default's offline start;
- ``{type: release, url, sha256}``: the model's released checkpoint -- an Ultralytics ``.pt`` from the
  official GitHub release assets, SAM's official ``.pth`` (the URLs of the segment-anything README) or
  SAM 2.1's ``.pt`` (the sam2 README's)
  -- fetched once by the local rule ``fetch_dense_weights`` (``url`` replaces the official address, e.g.
  a mirror; ``sha256`` is checked when given);
- ``{type: checkpoint, path}``: a local file.

The planning side (:func:`weights_file`, :func:`release_url`, :func:`problems`) imports no deep-learning
library; :func:`fetch_release` (the local rule) does.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

#: Ultralytics' release assets (https://github.com/ultralytics/assets/releases)
ULTRALYTICS_RELEASE = "https://github.com/ultralytics/assets/releases/download/v8.3.0/{name}"
ULTRALYTICS_RELEASED = re.compile(r"(yolov8[nsmlx]|yolo11[nsmlx]|rtdetr-[lx])")
#: segment-anything's README, "Model Checkpoints"
SAM_RELEASES = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    # the sam2 package's README, "Download Checkpoints" (SAM 2.1)
    "sam2.1_hiera_tiny": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt",
    "sam2.1_hiera_small": "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_small.pt",
}
TYPES = ("none", "pretrain", "release", "checkpoint")


def weights_entry(model_entry: dict | None) -> dict:
    return (model_entry or {}).get("weights") or {"type": "none"}


def weights_file(results: str, task: str, model: str, model_entry: dict | None) -> str | None:
    """The file a job of ``model`` starts from (None: random initialisation)."""
    weights = weights_entry(model_entry)
    kind = weights.get("type", "none")
    if kind == "checkpoint":
        return weights["path"]
    if kind == "pretrain":
        return f"{results}/{task}/weights/{model}/pretrain-{weights['dataset']}.pt"
    if kind == "release":
        return f"{results}/{task}/weights/{model}/release.pt"
    return None


def release_url(task: str, model_entry: dict | None) -> str | None:
    """The official checkpoint's address for this model (None: no release is known for it)."""
    entry = model_entry or {}
    weights = weights_entry(entry)
    if weights.get("url"):
        return weights["url"]
    if task == "detection":
        from medtl.detection.models import DETECTORS

        kind = entry.get("type")
        cfg = entry.get("cfg") or (DETECTORS.get(kind).default_cfg if kind in DETECTORS else "")
        stem = Path(cfg).name.removesuffix(".yaml")
        return ULTRALYTICS_RELEASE.format(name=f"{stem}.pt") if ULTRALYTICS_RELEASED.fullmatch(stem) else None
    return SAM_RELEASES.get(entry.get("encoder", "vit_b"))


def problems(task: str, where: str, model_entry: dict | None, source_datasets: dict | None) -> list[str]:
    """Config errors of a model's ``weights``, each by its key path."""
    from medtl.models.weights_declaration import DENSE_WEIGHTS, weights_problems

    weights = weights_entry(model_entry)
    kind = weights.get("type", "none")
    declared = weights_problems(weights, f"{where}.weights", DENSE_WEIGHTS)  # each type's settings, declared
    if declared:
        return declared
    if kind == "pretrain":
        dataset = weights.get("dataset")
        if dataset not in (source_datasets or {}):
            known = ", ".join(source_datasets or {}) or "none"
            return [f"{where}.weights.dataset: '{dataset}' is not in {task}.source_datasets (known: {known})"]
    if kind == "release" and release_url(task, model_entry) is None:
        what = ("the model's cfg (releases: yolov8n-x, yolo11n-x, rtdetr-l, rtdetr-x)" if task == "detection"
                else f"encoder '{(model_entry or {}).get('encoder', 'vit_b')}' (releases: {', '.join(SAM_RELEASES)})")
        return [f"{where}.weights: no released checkpoint is known for {what}; give its url"]
    return []


def fetch_release(task: str, model_entry: dict, out: str, cache_dir: str) -> None:
    """Download the model's released checkpoint once (resumable, checksummed when ``sha256`` is given) into
    ``cache_dir``, check that it is one for this model, and put it at ``out``."""
    from medtl.data.download import download
    from medtl.io import atomic_path

    url = release_url(task, model_entry)
    if url is None:
        raise ValueError(f"no released checkpoint is known for {model_entry}; set weights.url")
    weights = weights_entry(model_entry)
    cached = Path(cache_dir) / Path(url.split("?")[0]).name
    print(f"[weights] fetching {url} into {cached}", file=sys.stderr, flush=True)
    try:
        download(url, cached, sha256=weights.get("sha256"))
    except Exception as err:
        raise RuntimeError(f"could not fetch {url}: {err}. This needs internet on the machine running the local "
                           f"rule fetch_dense_weights; or download the file elsewhere and use weights type "
                           f"'checkpoint'.") from None
    state = check_release(task, model_entry, cached)
    import shutil

    with atomic_path(out) as tmp:
        if state is None:  # detection: Ultralytics' trainer reads the release file itself
            shutil.copyfile(cached, tmp)
        else:  # what the owner's loader read, in the owner's layout
            import torch

            torch.save(state, tmp)


def check_release(task: str, model_entry: dict, path: str | Path) -> dict | None:
    """Refuse a file that is not a checkpoint of this model, naming what does not fit. SAM and SAM 2 files
    are read by their owners' builders with the checkpoint (``segment_anything.sam_model_registry[encoder]
    (checkpoint=...)``, ``sam2.build_sam.build_sam2(config, ckpt_path=...)``), whose state is returned."""
    if task == "segmentation":
        from medtl.segmentation.sam import build_sam, read_released

        entry = {"encoder": "vit_b", "img_size": 1024, **model_entry}
        state = read_released(entry["encoder"], path)
        build_sam(entry["encoder"], int(entry["img_size"]), path)  # fits at the study's image size
        return state
    from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel, load_checkpoint

    from medtl.detection.models import DETECTORS, resolve_cfg

    try:
        # Ultralytics' own loader, as its trainer reads ``pretrained``: the release layout (``model`` in half
        # precision, ``ema`` None, ``train_args``), legacy module names remapped
        model, _ = load_checkpoint(str(path))
    except Exception as err:
        raise ValueError(f"{path} is not an Ultralytics checkpoint: {err}") from None
    nc = getattr(model, "nc", None) or (getattr(model, "yaml", None) or {}).get("nc")
    if not nc:
        raise ValueError(f"{path} is not an Ultralytics detection checkpoint (its model has no class count)")
    kind = model_entry.get("type", "yolo")
    cfg = model_entry.get("cfg") or DETECTORS.get(kind).default_cfg
    built = (RTDETRDetectionModel if kind == "rtdetr" else DetectionModel)(resolve_cfg(cfg), nc=int(nc),
                                                                          verbose=False)
    want = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if want != got:
        differ = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        raise ValueError(f"{path} is not a checkpoint of {cfg}: {len(differ)} tensors differ, e.g. {differ[:3]}")
