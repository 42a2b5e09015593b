"""MedMNIST v2/v3 (Yang et al., Sci Data 2023): small standardised 2D medical images, one
registry entry per flag, plus ``medmnist_npz`` for any .npz in the MedMNIST layout.

Layout of every file: one ``.npz`` with ``train_images``, ``train_labels``, ``val_images``,
``val_labels``, ``test_images``, ``test_labels``; images (N, H, W) grayscale or
(N, H, W, 3) RGB uint8, labels (N, 1) class index or (N, K) 0/1 for multi-label.

URLs and MD5s are those of the ``medmnist`` package's INFO table (Zenodo record 10519652);
option ``size`` (28 default, 64, 128, 224) picks the resolution. The official
train/val/test split is used as published (MedMNIST splits by patient where the source
datasets allow). ``path`` uses a local copy instead of downloading (still MD5-checked
against the official file; ``verify: false`` accepts any file).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.registry import DatasetSpec, RawData
from medtl.settings import Choice, Settings, Text, TextList
from medtl.data.sources.common import (
    ArchiveError, LabelFileError, RemoteFile, SourceInfo, label_table, obtain, register_source, slug,
)

PAGE = "https://medmnist.com/"
ZENODO = "https://zenodo.org/records/10519652/files/"
SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")
# flag -> (task, class names, licence, {size: md5}); from medmnist 3.0.2 medmnist/info.py INFO
FLAGS = {
    "pathmnist": ("multiclass", ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                                 "normal colon mucosa", "cancer-associated stroma",
                                 "colorectal adenocarcinoma epithelium"], "CC BY 4.0",
                  {28: "a8b06965200029087d5bd730944a56c1", 64: "55aa9c1e0525abe5a6b9d8343a507616",
                   128: "ac42d08fb904d92c244187169d1fd1d9", 224: "2c51a510bcdc9cf8ddb2af93af1eadec"}),
    "chestmnist": ("multilabel", ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
                                  "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis",
                                  "pleural", "hernia"], "CC BY 4.0",
                   {28: "02c8a6516a18b556561a56cbdd36c4a8", 64: "9de6cd0b934ebb5b7426cfba5efbae16",
                    128: "db107e5590b27930b62dbaf558aebee3", 224: "45bd33e6f06c3e8cdb481c74a89152aa"}),
    "dermamnist": ("multiclass", ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                                  "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                                  "vascular lesions"], "CC BY-NC 4.0",
                   {28: "0744692d530f8e62ec473284d019b0c7", 64: "b70a2f5635c6199aeaa28c31d7202e1f",
                    128: "2defd784463fa5243564e855ed717de1", 224: "8974907d8e169bef5f5b96bc506ae45d"}),
    "octmnist": ("multiclass", ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
                 "CC BY 4.0",
                 {28: "c68d92d5b585d8d81f7112f81e2d0842", 64: "e229e9440236b774d9f0dfef9d07bdaf",
                  128: "0a97e76651ace45c5d943ee3f65b63ae", 224: "abc493b6d529d5de7569faaef2773ba3"}),
    "pneumoniamnist": ("binary", ["normal", "pneumonia"], "CC BY 4.0",
                       {28: "28209eda62fecd6e6a2d98b1501bb15f", 64: "8f4eceb4ccffa70c672198ea285246c6",
                        128: "05b46931834c231683c68f40c47b2971", 224: "d6a3c71de1b945ea11211b03746c1fe1"}),
    "retinamnist": ("multiclass", ["grade 0", "grade 1", "grade 2", "grade 3", "grade 4"], "CC BY 4.0",
                    {28: "bd4c0672f1bba3e3a89f0e4e876791e4", 64: "afda852cc34dcda56f86ad2b2457dbcc",
                     128: "e48e916a24454daf90583d4e6efb1a18", 224: "eae7e3b6f3fcbda4ae613ebdcbe35348"}),
    "breastmnist": ("binary", ["malignant", "normal, benign"], "CC BY 4.0",
                    {28: "750601b1f35ba3300ea97c75c52ff8f6", 64: "742edef2a1fd1524b2efff4bd7ba9364",
                     128: "363e4b3f8d712e9b5de15470a2aaadf1", 224: "b56378a6eefa9fed602bb16d192d4c8b"}),
    "bloodmnist": ("multiclass", ["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte",
                                  "monocyte", "neutrophil", "platelet"], "CC BY 4.0",
                   {28: "7053d0359d879ad8a5505303e11de1dc", 64: "2b94928a2ae4916078ca51e05b6b800b",
                    128: "adace1e0ed228fccda1f39692059dd4c", 224: "b718ff6835fcbdb22ba9eacccd7b2601"}),
    "tissuemnist": ("multiclass", ["collecting duct, connecting tubule", "distal convoluted tubule",
                                   "glomerular endothelial cells", "interstitial endothelial cells", "leukocytes",
                                   "podocytes", "proximal tubule segments", "thick ascending limb"], "CC BY 4.0",
                    {28: "ebe78ee8b05294063de985d821c1c34b", 64: "123ece2eba09d0aa5d698fda57103344",
                     128: "61b955355d7425a89687b06cca3ce0c2", 224: "b077128c4a949f0a4eb01517f9037b9c"}),
    "organamnist": ("multiclass", None, "CC BY 4.0",
                    {28: "68e3f8846a6bd62f0c9bf841c0d9eacc", 64: "2dcccc29b88e6da5a01161ef20cda288",
                     128: "eeae80d0a227a8d099027e1b3cfd3b60", 224: "50747347e05c87dd3aaf92c49f9f3170"}),
    "organcmnist": ("multiclass", None, "CC BY 4.0",
                    {28: "b9ceb9546e10131b32923c5bbeaea2b1", 64: "3ce34a8724ea6f548e6db4744d03b6a9",
                     128: "773c1f009daa3fe5d9a2a201b2a7ed94", 224: "050f5e875dc056f6768abf94ec9995d1"}),
    "organsmnist": ("multiclass", None, "CC BY 4.0",
                    {28: "9ab87b696fb54e2a387ebe992d6ed5f1", 64: "53a6d115339d874c25e309a994ff46d3",
                     128: "ded0c5fa01a95dc4978b956f613e9b8e", 224: "b354719e553fbbb2513d5533f52a4cb1"}),
}
ORGANS = ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
          "lung-right", "pancreas", "spleen"]
SIZES_TEXT = {  # (train, val, test) at every resolution
    "pathmnist": (89996, 10004, 7180), "chestmnist": (78468, 11219, 22433), "dermamnist": (7007, 1003, 2005),
    "octmnist": (97477, 10832, 1000), "pneumoniamnist": (4708, 524, 624), "retinamnist": (1080, 120, 400),
    "breastmnist": (546, 78, 156), "bloodmnist": (11959, 1712, 3421), "tissuemnist": (165466, 23640, 47280),
    "organamnist": (34561, 6491, 17778), "organcmnist": (12975, 2392, 8216), "organsmnist": (13932, 2452, 8827),
}
METRICS = {"multilabel": (("map", "auroc"), "map"), "binary": (("auroc", "accuracy"), "auroc"),
           "multiclass": (("accuracy", "auroc", "macro_f1"), "accuracy")}


def classes_of(flag: str) -> list[str]:
    names = FLAGS[flag][1] or ORGANS
    return [slug(n) for n in names]


def remote_file(flag: str, size: int) -> RemoteFile:
    if size not in SIZES:
        raise ValueError(f"{flag}: option 'size' must be one of {SIZES}, got {size!r}")
    name = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    return RemoteFile(name, f"{ZENODO}{name}?download=1", md5=FLAGS[flag][3][size])


# -- reading any MedMNIST-layout .npz -------------------------------------------------------------
def load_npz(path: Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: .npz file is missing")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in data.files]
            if missing:
                raise LabelFileError(f"{path}: not in the MedMNIST layout; keys {missing} are missing "
                                     f"(it has {sorted(data.files)})")
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        if isinstance(err, LabelFileError):
            raise
        raise ArchiveError(f"{path}: corrupt or not a .npz archive ({err})") from None


def npz_raw(path: Path, task: str | None = None, classes: list[str] | None = None) -> RawData:
    """RawData (array-backed) from a MedMNIST-layout .npz; the task is inferred when not given."""
    data = load_npz(path)
    labels = {s: np.asarray(data[f"{s}_labels"]) for s in SPLITS}
    labels = {s: (v.reshape(-1, 1) if v.ndim == 1 else v) for s, v in labels.items()}
    widths = {v.shape[1] for v in labels.values()}
    if len(widths) != 1:
        raise LabelFileError(f"{path}: label arrays have different widths {sorted(widths)} across splits")
    for s in SPLITS:
        if len(labels[s]) != len(data[f"{s}_images"]):
            raise LabelFileError(f"{path}: {len(data[f'{s}_images'])} {s} images but {len(labels[s])} labels")
    width = widths.pop()
    all_labels = np.concatenate([labels[s] for s in SPLITS])
    if task is None:
        task = "multilabel" if width > 1 else ("binary" if int(all_labels.max()) <= 1 else "multiclass")
    if task == "multilabel":
        if not np.isin(all_labels, (0, 1)).all():
            raise LabelFileError(f"{path}: multi-label labels must be 0 or 1")
        n = width
        onehot = all_labels.astype(int)
    else:
        if width != 1:
            raise LabelFileError(f"{path}: a {task} task needs one label per image, found {width} columns")
        n = max(int(all_labels.max()) + 1, 2 if task == "binary" else 0, len(classes or []))
        if all_labels.min() < 0:
            raise LabelFileError(f"{path}: negative class index {int(all_labels.min())}")
        onehot = np.eye(n, dtype=int)[all_labels[:, 0].astype(int)]
    classes = list(classes) if classes else [f"class_{i}" for i in range(n)]
    if len(classes) != n:
        raise LabelFileError(f"{path}: {n} classes in the labels but {len(classes)} class names given")
    images = np.concatenate([np.asarray(data[f"{s}_images"]) for s in SPLITS])
    if images.dtype != np.uint8:
        raise LabelFileError(f"{path}: images must be uint8, found {images.dtype}")
    if images.ndim == 4 and images.shape[-1] not in (1, 3):
        raise LabelFileError(f"{path}: expected (N, H, W) or (N, H, W, 3) images, found {images.shape}")
    split = np.concatenate([[s] * len(labels[s]) for s in SPLITS])
    ids = [f"{s}/{i}" for s in SPLITS for i in range(len(labels[s]))]
    table = label_table(split, [""] * len(split), ids, pd.DataFrame(onehot, columns=classes))
    channels = 3 if images.ndim == 4 and images.shape[-1] == 3 else 1
    return RawData(table, classes, task, channels, array=images)


# -- registry entries -----------------------------------------------------------------------------
def make_fetch(flag: str):
    def fetch(raw_dir: Path, options: dict) -> dict:
        remote = remote_file(flag, int(options.get("size", 28)))
        if options.get("url") or options.get("md5"):
            remote = RemoteFile(remote.name, options.get("url") or remote.url, md5=options.get("md5") or remote.md5)
        opts = dict(options)
        if options.get("path"):
            opts["files"] = {remote.name: options["path"]}
        path = obtain(flag, remote, raw_dir, opts, page=PAGE, folders=("medmnist",))
        return {"path": str(Path(path).resolve()), "flag": flag, "size": int(options.get("size", 28))}
    return fetch


def make_read(flag: str):
    def read(manifest: dict, options: dict) -> RawData:
        return npz_raw(Path(manifest["path"]), FLAGS[flag][0], classes_of(flag))
    return read


FLAG_OPTIONS = Settings(
    raw_data=Text("raw", doc="folder with the files put there by hand"),
    size=Choice(28, choices=SIZES, doc="side of the released images, px"),
    path=Text(None, nullable=True, doc="a local copy of the .npz"),
    url=Text(None, nullable=True, doc="another download URL"),
    md5=Text(None, nullable=True, doc="the checksum of that download"),
)

for _flag, (_task, _names, _license, _md5s) in FLAGS.items():
    _metrics, _primary = METRICS[_task]
    _n = SIZES_TEXT[_flag]
    register_source(_flag, DatasetSpec(
        fetch=make_fetch(_flag), read=make_read(_flag), metrics=_metrics, primary_metric=_primary,
        description=f"MedMNIST {_flag} ({_task}, {len(classes_of(_flag))} classes); official split.",
        license=_license, urls=(PAGE, remote_file(_flag, 28).url), options=FLAG_OPTIONS,
    ), SourceInfo(
        title=f"MedMNIST {_flag}", access="automatic", page=PAGE, license=_license,
        split="official MedMNIST train/val/test",
        size=f"{_n[0]:,} / {_n[1]:,} / {_n[2]:,} images (train/val/test)", files=(f"{_flag}.npz",),
    ))


def _fetch_npz(raw_dir: Path, options: dict) -> dict:
    if not options.get("path"):
        raise ValueError("dataset type 'medmnist_npz' needs option 'path' (a .npz file) in its config entry")
    path = Path(options["path"]).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: .npz file does not exist; set 'path' in the dataset's config entry")
    return {"path": str(path)}


def _read_npz(manifest: dict, options: dict) -> RawData:
    classes = options.get("classes")
    return npz_raw(Path(manifest["path"]), options.get("task"), [slug(c) for c in classes] if classes else None)


register_source("medmnist_npz", DatasetSpec(
    fetch=_fetch_npz, read=_read_npz, metrics=("accuracy", "auroc", "macro_f1", "map"), primary_metric="auroc",
    description="Your own data: any .npz in the MedMNIST layout (option 'path'; 'task' and 'classes' optional).",
    options=Settings(path=Text(doc="the .npz file"),
                     task=Choice(None, choices=(None, "binary", "multiclass", "multilabel"),
                                 doc="the task; null: read from the labels"),
                     classes=TextList(None, nullable=True, doc="class names, in label order")),
), SourceInfo(
    title="Any MedMNIST-layout .npz (bring your own)", access="local file", page=PAGE,
    license="that of your file", split="the file's train/val/test arrays", size="-", files=(),
))
