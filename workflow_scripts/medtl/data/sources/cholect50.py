"""CholecT50 (Nwoye et al., MedIA 2022): 50 laparoscopic cholecystectomy videos with
surgical action triplets; here the 6 instruments present in a frame (multi-label).

Source layout (``CholecT50.zip``, given out after a request form)::

    CholecT50/videos/VID01/000000.png ...      frames extracted at 1 fps (854x480)
    CholecT50/labels/VID01.json                {"fps": 1, "categories": {"instrument": {"0": "grasper", ...}},
                                                "annotations": {"<frame>": [[triplet, instrument, score,
                                                    x, y, w, h, verb, target, score, x, y, w, h, phase], ...]}}

An instrument is present in a frame when any triplet instance of the frame names it
(instance element 1, -1 for none). Frames are sampled at ``frames_per_minute`` (default
6, i.e. every 10th frame at 1 fps); only those frames are unpacked.

Split (option ``variant``): ``cholect50`` (default) is the official video split of the
Rendezvous paper (35 train / 5 val / 10 test videos); ``cholect50-challenge`` the
CholecTriplet challenge split; ``cholect50-crossval`` the official 5-fold
cross-validation with ``test_fold`` (1-5), its last 5 training videos as validation.
Splits are by video, so a patient is never on both sides.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.registry import DatasetSpec, RawData
from medtl.settings import Choice, Int, Number, Settings, Text
from medtl.data.sources.common import (
    ArchiveError, LabelFileError, RemoteFile, SourceInfo, extract, label_table, manifest_root, obtain,
    register_source,
)

PAGE = "https://github.com/CAMMA-public/cholect50"
ARCHIVE = "CholecT50.zip"
INSTRUMENTS = ["grasper", "bipolar", "hook", "scissors", "clipper", "irrigator"]
# Official splits (Nwoye & Padoy, arXiv:2204.05235; CAMMA-public/cholect50 data loader), video numbers.
SPLITS = {
    "cholect50": {
        "train": [1, 15, 26, 40, 52, 65, 79, 2, 18, 27, 43, 56, 66, 92, 4, 22, 31, 47, 57, 68, 96, 5, 23, 35,
                  48, 60, 70, 103, 13, 25, 36, 49, 62, 75, 110],
        "val": [8, 12, 29, 50, 78],
        "test": [6, 51, 10, 73, 14, 74, 32, 80, 42, 111],
    },
    "cholect50-challenge": {
        "train": [1, 15, 26, 40, 52, 79, 2, 27, 43, 56, 66, 4, 22, 31, 47, 57, 68, 23, 35, 48, 60, 70, 13, 25,
                  49, 62, 75, 8, 12, 29, 50, 78, 6, 51, 10, 73, 14, 32, 80, 42],
        "val": [5, 18, 36, 65, 74],
        "test": [92, 96, 103, 110, 111],
    },
}
CROSSVAL = {
    1: [79, 2, 51, 6, 25, 14, 66, 23, 50, 111],
    2: [80, 32, 5, 15, 40, 47, 26, 48, 70, 96],
    3: [31, 57, 36, 18, 52, 68, 10, 8, 73, 103],
    4: [42, 29, 60, 27, 65, 75, 22, 49, 12, 110],
    5: [78, 43, 62, 35, 74, 1, 56, 4, 13, 92],
}


def video_splits(options: dict) -> dict[int, str]:
    """Video number -> split for the configured variant."""
    variant = options.get("variant", "cholect50")
    if variant in SPLITS:
        return {v: s for s, vids in SPLITS[variant].items() for v in vids}
    if variant != "cholect50-crossval":
        raise ValueError(f"cholect50: option 'variant' must be one of {[*SPLITS, 'cholect50-crossval']}, "
                         f"got {variant!r}")
    fold = int(options.get("test_fold", 1))
    if fold not in CROSSVAL:
        raise ValueError(f"cholect50: option 'test_fold' must be 1-5, got {fold}")
    train = [v for f, vids in CROSSVAL.items() if f != fold for v in vids]
    out = {v: "train" for v in train[:-5]}
    out.update({v: "val" for v in train[-5:]})
    out.update({v: "test" for v in CROSSVAL[fold]})
    return out


def _step(fps: float, options: dict) -> int:
    per_minute = float(options.get("frames_per_minute", 6))
    return max(1, int(round(fps * 60.0 / per_minute)))


def fetch(raw_dir: Path, options: dict) -> dict:
    root = manifest_root(options, "cholect50")
    if root is None:
        archive = obtain("cholect50", RemoteFile(ARCHIVE), raw_dir, options, page=PAGE,
                         why="CholecT50 is given out (CC BY-NC-SA 4.0) after a request form on its page.",
                         single_archive=True)
        step = _step(1.0, options)   # frames are at 1 fps in the release

        def keep(name: str) -> bool:
            if "/labels/" in f"/{name}" and name.endswith(".json"):
                return True
            stem = Path(name).stem
            return "/videos/" in f"/{name}" and stem.isdigit() and int(stem) % step == 0

        root = extract(archive, Path(raw_dir) / "extracted", keep=keep)
        where = str(archive)
    else:
        where = str(root)
    labels = sorted((p for p in Path(root).rglob("labels") if p.is_dir() and any(p.glob("VID*.json"))),
                    key=lambda p: len(p.parts))
    if not labels:
        raise ArchiveError(f"{where}: no labels/VIDxx.json files; is it the CholecT50 release?")
    return {"root": str(labels[0].parent.resolve())}


def _video_frames(json_path: Path, options: dict) -> tuple[list[int], np.ndarray, list[str]]:
    try:
        data = json.loads(json_path.read_text())
        annotations = data["annotations"]
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LabelFileError(f"{json_path}: malformed label file ({err})") from None
    except (KeyError, TypeError):
        raise LabelFileError(f"{json_path}: no 'annotations' mapping frame ids to triplet instances") from None
    names = (data.get("categories") or {}).get("instrument") or {}
    classes = [str(names.get(str(i), INSTRUMENTS[i])).lower() for i in range(len(INSTRUMENTS))]
    step = _step(float(data.get("fps", 1) or 1), options)
    frames, rows = [], []
    for key, instances in annotations.items():
        try:
            frame = int(key)
            present = np.zeros(len(INSTRUMENTS), dtype=int)
            for inst in instances:
                tool = int(inst[1])
                if tool >= 0:
                    present[tool] = 1
        except (ValueError, TypeError, IndexError) as err:
            raise LabelFileError(f"{json_path}: frame {key!r} has a malformed triplet instance ({err})") from None
        if frame % step == 0:
            frames.append(frame)
            rows.append(present)
    order = np.argsort(frames)
    return [frames[i] for i in order], np.asarray(rows, dtype=int)[order].reshape(-1, len(INSTRUMENTS)), classes


def read(manifest: dict, options: dict) -> RawData:
    root = Path(manifest["root"])
    splits = video_splits(options)
    tables, paths = [], []
    for json_path in sorted((root / "labels").glob("VID*.json")):
        video = json_path.stem
        number = int("".join(ch for ch in video if ch.isdigit()) or -1)
        if number not in splits:
            continue
        frames, labels, classes = _video_frames(json_path, options)
        if classes != INSTRUMENTS:
            raise LabelFileError(f"{json_path}: instrument categories {classes} differ from {INSTRUMENTS}")
        files = [root / "videos" / video / f"{f:06d}.png" for f in frames]
        missing = [f for f in files if not f.exists()]
        if missing:
            raise ArchiveError(f"{missing[0]}: frame listed in {json_path.name} is missing "
                               f"({len(missing)} missing in {video})")
        tables.append(label_table([splits[number]] * len(frames), [video] * len(frames),
                                  [f"{video}/{f:06d}" for f in frames], pd.DataFrame(labels, columns=INSTRUMENTS)))
        paths += [str(f) for f in files]
    if not tables:
        raise LabelFileError(f"{root / 'labels'}: none of the split's videos has a label file")
    return RawData(pd.concat(tables, ignore_index=True), list(INSTRUMENTS), "multilabel", 3, paths=paths)


register_source("cholect50", DatasetSpec(
    fetch=fetch, read=read, metrics=("map", "auroc"), primary_metric="map",
    description="CholecT50 laparoscopic video frames, 6 instruments (multi-label), 6 frames per minute; "
                "official video split.",
    license="CC BY-NC-SA 4.0", urls=(PAGE,),
    options=Settings(
        raw_data=Text("raw", doc="folder with the files put there by hand"),
        frames_per_minute=Number(6, above=0, doc="frames kept per minute of video"),
        variant=Choice("cholect50", choices=(*SPLITS, "cholect50-crossval"), doc="the split of the videos"),
        test_fold=Int(1, minimum=1, maximum=5, doc="cholect50-crossval: the fold tested"),
    ),
), SourceInfo(
    title="CholecT50 (CAMMA, University of Strasbourg)", access="manual", page=PAGE,
    license="CC BY-NC-SA 4.0 (access by request form)",
    split="official video split of the Rendezvous paper (35/5/10 videos); variants: challenge, 5-fold crossval",
    size="50 videos, ~100,900 frames at 1 fps (~16,800 at 6 per minute)",
    files=(ARCHIVE,),
))
