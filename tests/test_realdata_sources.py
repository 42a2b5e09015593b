"""Real data from ../shared/data through the same adapters and parsers as the studies' sources:
MedMNIST .npz files (official and not), a histology image folder, a brain-MRI folder with
spaces in file names and its labels.csv, and NIH ChestX-ray14 boxes. Each test skips when
its folder is absent."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtl.data import DATASETS
from medtl.data.download import ChecksumError
from medtl.data.prepare import prepare
from medtl.data.sources.chestxray14 import read_bbox_list
from medtl.io import write_json

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.realdata


def need(folder: str) -> Path:
    path = SHARED / folder
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def run(name: str, dataset_type: str, options: dict, tmp_path: Path, size: int = 28, val_fraction: float = 0.2):
    spec = DATASETS.get(dataset_type)
    raw_dir = tmp_path / "raw" / name
    manifest = spec.fetch(raw_dir, {**spec.options, **options})
    write_json(raw_dir / "manifest.json", manifest)
    entry = {"type": dataset_type, "options": options, "val_fraction": val_fraction, "split_seed": 0}
    return prepare(name, entry, str(raw_dir / "manifest.json"), size, size, str(tmp_path / "prepared" / name))


# -- MedMNIST -------------------------------------------------------------------------------------
def npz_files() -> list[Path]:
    folder = SHARED / "medmnist"
    return sorted(folder.glob("*.npz")) if folder.exists() else []


@pytest.mark.parametrize("npz", npz_files() or [pytest.param(None, marks=pytest.mark.skip("no shared MedMNIST"))],
                         ids=lambda p: p.stem if p else "none")
def test_medmnist_npz_adapter_on_shared_files(npz, tmp_path):
    store = run(npz.stem, "medmnist_npz", {"path": str(npz)}, tmp_path)
    with np.load(npz) as data:
        expected = {s: len(data[f"{s}_labels"]) for s in ("train", "val", "test")}
        rgb = data["train_images"].ndim == 4
        n_classes = int(max(data[f"{s}_labels"].max() for s in ("train", "val", "test"))) + 1
    assert store.meta["counts"] == expected   # the official split, untouched
    assert store.images.shape[1:] == (28, 28, 3 if rgb else 1)
    assert len(store.classes) == max(n_classes, 2)
    assert store.task == ("binary" if n_classes <= 2 else "multiclass")


@pytest.mark.parametrize("flag", ["breastmnist", "retinamnist"])
def test_official_medmnist_files_pass_the_registry_md5(flag, tmp_path):
    npz = need("medmnist") / f"{flag}.npz"
    if not npz.exists():
        pytest.skip(f"{npz} is absent")
    store = run(flag, flag, {"path": str(npz)}, tmp_path)
    assert store.classes == (["malignant", "normal_benign"] if flag == "breastmnist"
                             else ["grade_0", "grade_1", "grade_2", "grade_3", "grade_4"])
    assert sum(store.meta["counts"].values()) == (780 if flag == "breastmnist" else 1600)


def test_unofficial_pneumoniamnist_fails_the_official_md5_unless_told(tmp_path):
    npz = need("medmnist") / "pneumoniamnist_subset_varun19424.npz"
    if not npz.exists():
        pytest.skip(f"{npz} is absent")
    with pytest.raises(ChecksumError, match=r"pneumoniamnist_subset_varun19424\.npz.*28209eda62fecd6e6a2d98b1501bb15f"):
        run("pneu", "pneumoniamnist", {"path": str(npz)}, tmp_path)
    store = run("pneu", "pneumoniamnist", {"path": str(npz), "verify": False}, tmp_path)
    assert store.classes == ["normal", "pneumonia"]
    assert store.meta["counts"] == {"train": 3882, "val": 524, "test": 624}


# -- image folders and CSVs -----------------------------------------------------------------------
def test_histology_tiles_through_image_folder(tmp_path):
    root = need("kather2016_crc_tiles")
    store = run("kather", "image_folder", {"root": str(root), "test_fraction": 0.25}, tmp_path, size=32)
    assert store.classes == ["01_TUMOR", "02_STROMA", "03_COMPLEX", "04_LYMPHO", "05_DEBRIS", "06_MUCOSA",
                             "07_ADIPOSE", "08_EMPTY"]
    assert len(store.labels) == 24 and store.task == "multiclass"
    assert store.images.shape == (24, 32, 32, 3)
    assert store.labels[store.classes].sum().tolist() == [3] * 8


def test_brain_mri_with_spaces_in_names_through_csv_table(tmp_path):
    root = need("brain_mri_tumor_yesno")
    labels = pd.read_csv(root / "labels.csv")
    assert labels["image"].str.contains(" ").any()   # the point of this data set
    options = {"root": str(root), "csv": "labels.csv", "path_column": "image", "label_columns": ["label"],
               "task": "binary", "channels": 1}
    store = run("brain_mri", "csv_table", options, tmp_path, size=24)
    assert store.classes == ["no_tumor", "tumor"] and store.task == "binary"
    assert len(store.labels) == len(labels) == 253
    assert store.labels[store.classes].sum().tolist() == [98, 155]
    assert store.images.shape == (253, 24, 24, 1)


def test_brain_mri_folder_through_image_folder(tmp_path):
    root = need("brain_mri_tumor_yesno")
    raw = DATASETS.get("image_folder").read({"root": str(root)}, {})
    assert raw.classes == ["no", "yes"] and len(raw.table) == 253
    assert all(Path(p).exists() for p in raw.paths)


# -- ChestX-ray14 boxes ---------------------------------------------------------------------------
def test_nih_bbox_list_through_the_box_csv_parser():
    root = need("nih_cxr14_bbox")
    boxes = read_bbox_list(root / "BBox_List_2017.csv", root / "thumb256" / "images", scale=0.25)
    assert len(boxes) == 984 and boxes["image_id"].nunique() == 880
    assert sorted(boxes["class"].unique()) == (root / "classes.txt").read_text().split()
    assert boxes[["x1", "y1"]].min().min() >= 0 and boxes[["x2", "y2"]].max().max() <= 256 + 1
    assert all(Path(p).exists() for p in boxes["image"].unique())
    # agree with the YOLO labels derived from the same file (class xc yc w h, normalised)
    classes = (root / "classes.txt").read_text().split()
    for image_id in sorted(boxes["image_id"].unique())[:20]:
        yolo = np.loadtxt(root / "thumb256" / "labels" / f"{image_id}.txt", ndmin=2)
        ours = boxes[boxes["image_id"] == image_id]
        mine = np.array([[classes.index(r["class"]), (r.x1 + r.x2) / 512, (r.y1 + r.y2) / 512,
                          (r.x2 - r.x1) / 256, (r.y2 - r.y1) / 256] for _, r in ours.iterrows()])
        key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
        np.testing.assert_allclose(key(mine), key(yolo), atol=2e-3)
