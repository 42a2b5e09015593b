"""Prepared store, validation split, and the two code-free adapters for user data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtl.data import DATASETS
from medtl.data.adapters import LabelFileError, read_csv_table, read_image_folder
from medtl.data.prepare import carve_validation, prepare
from medtl.data.store import StoreError, load_store, validate, write_store
from medtl.io import write_json


# -- store -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task,channels", [("multiclass", 3), ("multilabel", 1), ("binary", 3)])
def test_store_round_trip(tmp_path, task, channels, store_parts, make_store):
    images, table, meta = store_parts(task=task, channels=channels, n=20, size=16)
    store = make_store(tmp_path / "store", task=task, channels=channels, n=20, size=16)
    again = load_store(tmp_path / "store")
    for s in (store, again):
        assert s.images.dtype == np.uint8 and s.images.shape == (20, 16, 16, channels)
        np.testing.assert_array_equal(np.asarray(s.images), images)
        pd.testing.assert_frame_equal(s.labels, table, check_dtype=False)
        assert s.task == task and s.classes == meta["classes"]
        assert s.meta["channels"] == channels and s.meta["size"] == [16, 16]
        assert s.meta["counts"] == {sp: int((table["split"] == sp).sum()) for sp in ("train", "val", "test")}
        for split in ("train", "val", "test"):
            rows = table[table["split"] == split]
            np.testing.assert_array_equal(s.indices(split), rows["index"].to_numpy())
            np.testing.assert_array_equal(s.targets(split), rows[meta["classes"]].to_numpy(np.float32))
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["store"]  # no temporary folder left behind
    assert isinstance(again.images, np.memmap)  # training reads rows lazily


def test_load_store_names_a_missing_file(tmp_path, make_store):
    make_store(tmp_path / "s", n=10)
    (tmp_path / "s" / "meta.json").unlink()
    with pytest.raises(StoreError, match=r"meta.json.*incomplete"):
        load_store(tmp_path / "s")


@pytest.fixture
def valid(store_parts):
    return store_parts(task="multiclass", n=10, size=8)


@pytest.mark.parametrize("breakage,message", [
    (lambda i, t, m: m.update(task="segmentation"), r"task must be one of .*'segmentation'"),
    (lambda i, t, m: t.__setitem__("c1", t["c1"].replace({0: 2})), r"class columns must hold 0 or 1"),
    (lambda i, t, m: t.loc.__setitem__((0, "c0"), 0), r"multiclass dataset needs exactly one class per image"),
    (lambda i, t, m: t.__setitem__("split", t["split"].replace({"val": "valid"})), r"unknown split names \['valid'\]"),
    (lambda i, t, m: t.drop(columns="c2", inplace=True), r"lacks columns \['c2'\]"),
    (lambda i, t, m: t.__setitem__("index", t["index"] + 1), r"index out of range for 10 images"),
])
def test_validate_names_the_problem(breakage, message, valid):
    images, table, meta = valid
    validate(images, table, meta, where="here")  # the unbroken store passes
    breakage(images, table, meta)
    with pytest.raises(StoreError, match=message) as err:
        validate(images, table, meta, where="/some/store")
    assert "/some/store" in str(err.value)


def test_validate_multiclass_row_with_two_classes(valid):
    images, table, meta = valid
    row = table.index[table["c0"] == 1][0]
    table.loc[row, "c1"] = 1  # now c0 and c1
    with pytest.raises(StoreError, match="exactly one class per image"):
        validate(images, table, meta, where="x")
    meta["task"] = "multilabel"  # the same row is fine for a multi-label dataset
    validate(images, table, meta, where="x")


def test_validate_rejects_non_uint8_images(valid):
    images, table, meta = valid
    with pytest.raises(StoreError, match="uint8"):
        validate(images.astype(np.float32), table, meta, where="x")
    with pytest.raises(StoreError, match="uint8"):
        validate(images[..., :2], table, meta, where="x")


def test_failed_write_leaves_no_store(tmp_path, store_parts):
    images, table, meta = store_parts(n=10, size=8)

    def broken_fill(out):
        out[:5] = images[:5]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_store(tmp_path / "store", 10, (8, 8), 3, broken_fill, table, meta)
    assert list(tmp_path.iterdir()) == []  # neither the store nor its partial folder

    bad = table.copy()
    bad.loc[0, "c0"] = 7
    with pytest.raises(StoreError):
        write_store(tmp_path / "store", 10, (8, 8), 3, lambda out: out.__setitem__(slice(None), images), bad, meta)
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_previous_store(tmp_path, store_parts, make_store):
    old = make_store(tmp_path / "store", n=10, size=8)
    images, table, meta = store_parts(n=10, size=8, seed=5)

    def broken_fill(out):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_store(tmp_path / "store", 10, (8, 8), 3, broken_fill, table, meta)
    again = load_store(tmp_path / "store")
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(old.images))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


# -- validation split ------------------------------------------------------------------------------------------
def _patients_table(n_patients=40, per_patient=3):
    rows = []
    for pid in range(n_patients):
        for v in range(per_patient):
            rows.append({"split": "test" if pid % 5 == 0 else "train", "group": f"pt{pid}",
                         "image_id": f"pt{pid}_{v}"})
    return pd.DataFrame(rows)


def test_carve_validation_keeps_patients_whole():
    table = _patients_table()
    out = carve_validation(table, 0.25, seed=3)
    train_groups = set(out.loc[out["split"] == "train", "group"])
    val_groups = set(out.loc[out["split"] == "val", "group"])
    assert val_groups and not train_groups & val_groups
    assert len(val_groups) == round(0.25 * 32)  # a quarter of the 32 training patients
    assert (out["split"] == "test").equals(table["split"] == "test")  # test rows never move
    assert not (table["split"] == "val").any()  # the input is not modified


def test_carve_validation_is_deterministic():
    table = _patients_table()
    a, b = carve_validation(table, 0.25, seed=3), carve_validation(table, 0.25, seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = carve_validation(table, 0.25, seed=4)
    assert not a["split"].equals(c["split"])


def test_carve_validation_without_patient_ids_splits_images():
    table = _patients_table(n_patients=20, per_patient=2)
    table["group"] = ""
    out = carve_validation(table, 0.5, seed=0)
    n_train = int((table["split"] == "train").sum())
    assert int((out["split"] == "val").sum()) == n_train // 2


def test_carve_validation_keeps_a_given_validation_split():
    table = _patients_table()
    table.loc[:5, "split"] = "val"
    pd.testing.assert_frame_equal(carve_validation(table, 0.3, seed=0), table)
    pd.testing.assert_frame_equal(carve_validation(_patients_table(), 0.0, seed=0), _patients_table())


# -- csv_table adapter -------------------------------------------------------------------------------------------
def _png(path, value=100, size=(20, 24), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 50)
    Image.new(mode, size, color).save(path)


def _csv_folder(tmp_path, text: str, images=("a.png", "b.png")):
    root = tmp_path / "raw"
    root.mkdir()
    for name in images:
        _png(root / name)
    (root / "labels.csv").write_text(text)
    return root


def test_csv_table_reads_labels(tmp_path):
    root = _csv_folder(tmp_path, "path,split,group,x,y\na.png,train,p1,1,0\nb.png,valid,p2,1,1\n")
    raw = read_csv_table({"root": str(root)}, {})
    assert raw.classes == ["x", "y"] and raw.task == "multilabel"
    assert raw.table["split"].tolist() == ["train", "val"]
    assert raw.table[["x", "y"]].to_numpy().tolist() == [[1, 0], [1, 1]]
    assert raw.paths == [str((root / "a.png").resolve()), str((root / "b.png").resolve())]


def test_csv_table_splits_whole_patients(tmp_path):
    """Without a split column the test split is drawn by patient (group_column), and the validation carve
    of prepare is too: no patient has images on two sides (100 patients of 4 images each)."""
    from medtl.data.prepare import carve_validation

    root = tmp_path / "raw"
    root.mkdir()
    rows = ["path,patient,x"] + [f"p{p:03d}_{i}.png,P{p:03d},{(p + i) % 2}" for p in range(100) for i in range(4)]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    raw = read_csv_table({"root": str(root)}, {"group_column": "patient", "label_columns": ["x"],
                                               "test_fraction": 0.3})
    table = carve_validation(raw.table, 0.2, 0)
    sides = table.groupby("group")["split"].nunique()
    assert (sides == 1).all(), f"patients on two sides: {sides[sides > 1].index.tolist()[:5]}"
    counts = table.drop_duplicates("group")["split"].value_counts()
    assert set(counts.index) == {"train", "val", "test"} and 15 <= counts["test"] <= 45
    # without a group id each image is its own unit, hashed by its file
    raw = read_csv_table({"root": str(root)}, {"group_column": None, "label_columns": ["x"], "test_fraction": 0.3})
    assert raw.table.groupby(raw.table["image_id"].str[:4])["split"].nunique().max() == 2


def test_csv_table_class_name_column(tmp_path):
    root = _csv_folder(tmp_path, "path,label\na.png,cat\nb.png,dog\n")
    raw = read_csv_table({"root": str(root)}, {"task": "multiclass", "label_columns": ["label"]})
    assert raw.classes == ["cat", "dog"]
    assert raw.table[["cat", "dog"]].to_numpy().tolist() == [[1, 0], [0, 1]]
    with pytest.raises(LabelFileError, match=r"labels.csv: column 'label' has labels \['dog'\] outside"):
        read_csv_table({"root": str(root)}, {"task": "multiclass", "label_columns": ["label"], "classes": ["cat"]})


@pytest.mark.parametrize("text,options,message", [
    ("path,x\na.png,1\n", {"label_columns": ["x", "y"]}, r"column 'y' is missing"),
    ("file,x\na.png,1\n", {}, r"column 'path' is missing"),
    ("path,x,y\na.png,1,2\nb.png,0,1\n", {}, r"label columns \['y'\] hold values other than 0 and 1"),
    ("path,x,y\na.png,1,yes\nb.png,0,1\n", {}, r"label columns \['x', 'y'\] must hold 0 or 1"),
    ("path,x,y\na.png,1,\nb.png,0,1\n", {}, r"label columns \['y'\] hold values other than 0 and 1"),
    ("path,x\na.png,1\nb.png,0,1,1\n", {}, r"malformed label file"),
])
def test_csv_table_label_errors_name_the_file(tmp_path, text, options, message):
    root = _csv_folder(tmp_path, text)
    with pytest.raises(LabelFileError, match=message) as err:
        read_csv_table({"root": str(root)}, options)
    assert str(root / "labels.csv") in str(err.value)


def test_csv_table_binary_garbage_is_a_label_file_error(tmp_path):
    root = _csv_folder(tmp_path, "")
    (root / "labels.csv").write_bytes(b"\xff\xfe\x00\x81\x9f" * 40 + b"\n\x00\xc3(" * 10)
    with pytest.raises(LabelFileError, match="labels.csv"):
        read_csv_table({"root": str(root)}, {})


def test_csv_table_missing_label_file(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    with pytest.raises(LabelFileError, match=r"mine.csv: label file is missing") as err:
        read_csv_table({"root": str(root)}, {"csv": "mine.csv"})
    assert str(root / "mine.csv") in str(err.value)


def test_csv_table_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DATASETS.get("csv_table").fetch(tmp_path, {"root": str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match="needs option 'root'"):
        DATASETS.get("csv_table").fetch(tmp_path, {})


def _prepare(tmp_path, root, options, entry_type="csv_table", resize=12, crop=10):
    manifest = tmp_path / "manifest.json"
    write_json(manifest, DATASETS.get(entry_type).fetch(tmp_path, {"root": str(root), **options}))
    entry = {"type": entry_type, "options": options, "val_fraction": 0.25, "split_seed": 0}
    return prepare("mine", entry, str(manifest), resize, crop, str(tmp_path / "prepared" / "mine"))


def _csv_dataset(tmp_path, n=12):
    root = tmp_path / "raw"
    lines = ["path,split,group,x,y"]
    for i in range(n):
        _png(root / "img" / f"{i}.png", value=10 * i)
        lines.append(f"img/{i}.png,{'test' if i % 4 == 0 else 'train'},p{i},{i % 2},{(i // 2) % 2}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_csv_table_prepare(tmp_path):
    root = _csv_dataset(tmp_path)
    store = _prepare(tmp_path, root, {})
    assert store.images.shape == (12, 10, 10, 3)
    assert store.meta["counts"]["test"] == 3 and store.meta["counts"]["val"] > 0
    assert store.labels["image_id"].tolist() == [f"img/{i}.png" for i in range(12)]
    assert int(store.images[5].mean()) == 50  # the pixel value written into img/5.png


@pytest.mark.parametrize("damage,message", [
    (lambda p: p.unlink(), "image file is missing"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png"), "cannot decode image"),
    (lambda p: p.write_bytes(b""), "cannot decode image"),
])
def test_bad_image_file_is_named_and_leaves_no_store(tmp_path, damage, message):
    root = _csv_dataset(tmp_path)
    damage(root / "img" / "7.png")
    with pytest.raises(StoreError, match=message) as err:
        _prepare(tmp_path, root, {})
    assert str(root / "img" / "7.png") in str(err.value)
    assert not (tmp_path / "prepared" / "mine").exists()
    assert list((tmp_path / "prepared").iterdir()) == []


# -- image_folder adapter ---------------------------------------------------------------------------------------
def test_image_folder_with_spaces_in_names(tmp_path):
    root = tmp_path / "my images"
    for cls, n in (("no tumor", 7), ("tumor", 9)):
        for i in range(n):
            _png(root / cls / f"scan {i} (copy).png", value=20 + 10 * i, size=(30, 20), mode="RGB")
    (root / "tumor" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    raw = read_image_folder({"root": str(root)}, {})
    assert raw.classes == ["no tumor", "tumor"] and raw.task == "binary"
    assert len(raw.table) == 16 and len(raw.paths) == 16
    assert raw.table[["no tumor", "tumor"]].sum().tolist() == [7, 9]
    assert all(" " in p for p in raw.table["image_id"])
    assert set(raw.table["split"]) <= {"train", "test"}
    # the split depends on the file name only: reading twice gives the same one
    pd.testing.assert_frame_equal(read_image_folder({"root": str(root)}, {}).table, raw.table)

    store = _prepare(tmp_path, root, {"test_fraction": 0.3}, entry_type="image_folder")
    assert store.task == "binary" and store.images.shape == (16, 10, 10, 3)
    assert set(store.labels["split"]) == {"train", "val", "test"}
    assert store.meta["primary_metric"] == "accuracy"


def test_image_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LabelFileError, match="one sub-folder per class"):
        read_image_folder({"root": str(empty)}, {})
    (empty / "a").mkdir()
    (empty / "a" / "x.txt").write_text("x")
    with pytest.raises(LabelFileError, match="no image files"):
        read_image_folder({"root": str(empty)}, {})


# -- real data ----------------------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_kather_tiles_through_image_folder_and_prepare(tmp_path, shared_data):
    root = shared_data / "kather2016_crc_tiles"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    # 3 tiles per class: a drawn split cannot put every class in train, val and test, so each split gets one
    # tile of each class, as split folders (linked, not copied)
    split = tmp_path / "split"
    for cls in sorted(d.name for d in root.iterdir() if d.is_dir()):
        for name, tile in zip(("train", "val", "test"), sorted((root / cls).iterdir())):
            (split / name / cls).mkdir(parents=True)
            (split / name / cls / tile.name).symlink_to(tile)
    store = _prepare(tmp_path, split, {"split_folders": True}, entry_type="image_folder", resize=36, crop=32)
    assert store.task == "multiclass" and len(store.classes) == 8
    assert store.classes[0] == "01_TUMOR" and store.classes[-1] == "08_EMPTY"
    assert store.images.shape == (24, 32, 32, 3)
    assert sum(store.meta["counts"].values()) == 24 and all(store.meta["counts"].values())
    assert (store.labels[store.classes].sum(axis=0) == 3).all()
    assert float(np.asarray(store.images).std()) > 5  # real tiles, not a blank array


def test_synthetic_source_has_grey_and_colour_images():
    """The offline stand-in for ImageNet covers grayscale targets (radiographs) too: about half of its
    images are grey (three equal channels), the rest in colour, in every class."""
    from medtl.data.synthetic import SOURCE_CLASSES, source_image

    rng = np.random.default_rng(0)
    grey = {c: [] for c in range(len(SOURCE_CLASSES))}
    for i in range(160):
        img = source_image(rng, i % len(SOURCE_CLASSES), 24).astype(int)
        grey[i % len(SOURCE_CLASSES)].append(bool((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()))
    share = np.mean([g for v in grey.values() for g in v])
    assert 0.35 < share < 0.65
    assert all(any(v) and not all(v) for v in grey.values())
