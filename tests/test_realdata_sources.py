"""Real data from ../shared/data through the same adapters and parsers as the studies' sources:
MedMNIST .npz files (official and not), a histology image folder, a brain-MRI folder with
spaces in file names and its labels.csv; NIH ChestX-ray14 boxes and real lung and heart masks
through the dense sources. Each test skips when its folder is absent."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtl.data import DATASETS
from medtl.data.download import ChecksumError
from medtl.data.prepare import prepare
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
    # 3 tiles per class: one of each class per split, as split folders (a drawn split is refused, issue 22)
    split = tmp_path / "split"
    for cls in sorted(d.name for d in root.iterdir() if d.is_dir()):
        for name, tile in zip(("train", "val", "test"), sorted((root / cls).iterdir())):
            (split / name / cls).mkdir(parents=True)
            (split / name / cls / tile.name).symlink_to(tile)
    store = run("kather", "image_folder", {"root": str(split), "split_folders": True}, tmp_path, size=32)
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


# -- dense sources: NIH ChestX-ray14 boxes, CheXmask-encoded lung and heart masks --------------------
def dense(kind: str, task: str, options: dict, tmp_path: Path, size: int):
    from medtl.data import DENSE_DATASETS
    from medtl.data.dense_prepare import prepare_dense

    spec = DENSE_DATASETS.get(kind)
    manifest = spec.fetch(tmp_path / "raw", {**spec.options, "raw_data": str(tmp_path / "archives"), **options})
    write_json(tmp_path / "raw" / "manifest.json", manifest)
    entry = {"type": kind, "options": options, "val_fraction": 0.2, "split_seed": 0}
    return prepare_dense(kind, task, entry, str(tmp_path / "raw" / "manifest.json"), size, str(tmp_path / "store"))


def test_nih_cxr14_bbox_source_on_the_real_box_file(tmp_path):
    """The real BBox_List_2017.csv (malformed header, 1024 px coordinates) and the 880 images at 256 px:
    every box, at the place the YOLO labels derived from the same file give, patients on one side."""
    root = need("nih_cxr14_bbox")
    store = dense("nih_cxr14_bbox", "detection", {"root": str(root), "images": "thumb256/images"}, tmp_path, 256)
    classes = (root / "classes.txt").read_text().split()
    assert store.classes == classes and len(store.labels) == 880 and len(store.boxes) == 984
    assert store.meta["box_counts"] == {"Atelectasis": 180, "Cardiomegaly": 146, "Effusion": 153, "Infiltrate": 123,
                                        "Mass": 85, "Nodule": 79, "Pneumonia": 120, "Pneumothorax": 98}
    assert store.labels.groupby("group")["split"].nunique().max() == 1
    assert set(store.meta["counts"]) == {"train", "val", "test"} and min(store.meta["counts"].values()) > 100
    for image_id in sorted(store.labels["image_id"])[:20]:
        yolo = np.loadtxt(root / "thumb256" / "labels" / f"{Path(image_id).stem}.txt", ndmin=2)
        index = int(store.labels.loc[store.labels["image_id"] == image_id, "index"].iloc[0])
        ours = store.boxes[store.boxes["index"] == index]
        mine = np.array([[classes.index(r["class"]), (r.x1 + r.x2) / 512, (r.y1 + r.y2) / 512,
                          (r.x2 - r.x1) / 256, (r.y2 - r.y1) / 256] for _, r in ours.iterrows()])
        key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
        np.testing.assert_allclose(key(mine), key(yolo), atol=2e-3)


def test_chexmask_encoding_of_real_lung_and_heart_masks_matches_the_mask_files(tmp_path):
    """Real heart and lung masks of 12 radiographs (mixed sizes and modes) encoded as CheXmask encodes
    them, read by the chexmask source: the same store, pixel for pixel, as mask_folder makes from the files."""
    root = need("cxr_covid_seg")
    index = pd.read_csv(root / "anatomy_masks" / "index.csv", dtype=str, keep_default_na=False).iloc[:12]
    columns = {"heart": "heart_mask", "left_lung": "left_lung_mask", "right_lung": "right_lung_mask"}
    chexmask_columns = {"Heart": "heart_mask", "Left Lung": "left_lung_mask", "Right Lung": "right_lung_mask"}
    rows = []
    for _, r in index.iterrows():
        row = {"Image Index": Path(r["image"]).name, "Dice RCA (Mean)": 0.9, "Height": int(r["height"]),
               "Width": int(r["width"])}
        for name, col in chexmask_columns.items():
            mask = np.asarray(Image.open(root / r[col]).convert("L")) > 0 if r[col] else None
            if mask is not None:   # CheXmask's get_RLE_from_mask: 1-based runs, row by row
                pixels = np.concatenate([[0], mask.ravel().astype(np.uint8), [0]])
                runs = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
                runs[1::2] -= runs[::2]
            row[name] = " ".join(map(str, runs)) if mask is not None else ""
        rows.append(row)
    pd.DataFrame(rows).to_csv(tmp_path / "ChestX-Ray8.csv", index=False)
    index.to_csv(tmp_path / "index.csv", index=False)
    ours = dense("chexmask", "segmentation", {"images": "chestxray14", "csv": str(tmp_path / "ChestX-Ray8.csv"),
                                              "image_root": str(root / "images")}, tmp_path / "a", 64)
    files = dense("mask_folder", "segmentation", {"root": str(root), "index": str(tmp_path / "index.csv"),
                                                  "structures": columns}, tmp_path / "b", 64)
    assert ours.classes == files.classes == list(columns) and len(ours.labels) == 12
    order = [int(files.labels.loc[files.labels["image_id"].map(lambda p: Path(p).name) == i, "index"].iloc[0])
             for i in ours.labels["image_id"]]
    assert np.array_equal(ours.masks, files.masks[order]) and np.array_equal(ours.images, files.images[order])
    assert ours.masks.mean(axis=(0, 2, 3)).min() > 0.02   # the masks are there, not all zero
