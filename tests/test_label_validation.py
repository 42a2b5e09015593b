"""Issue 22, bad input never becomes a number: labels and splits are checked before any image is decoded,
in one place (medtl.data.prepare.validate_labels, applied to every source's table), and each refusal names
the row (for csv_table the line of the label file, the header being line 1) and the value."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtl.data import DATASETS
from medtl.data.adapters import LabelFileError, read_csv_table, read_image_folder
from medtl.data.prepare import LabelError, carve_validation, prepare, validate_labels
from medtl.data.store import StoreError
from medtl.io import write_json

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _png(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (12, 12), value).save(path)


def _csv_dataset(tmp_path: Path, lines: list[str], header: str = "path,split,label") -> Path:
    """labels.csv under tmp_path/raw with ``lines``; every path in its first column gets a tiny PNG."""
    root = tmp_path / "raw"
    for line in filter(None, lines):
        _png(root / line.split(",")[0], value=10 + len(line))
    (root / "labels.csv").write_text("\n".join([header, *lines]) + "\n")
    return root


def _balanced(labels=("no", "yes"), per_split=(4, 2, 2)) -> list[str]:
    """path,split,label lines with every label in every split."""
    lines = []
    for label in labels:
        for split, n in zip(("train", "val", "test"), per_split):
            lines += [f"img/{label}_{split}_{i}.png,{split},{label}" for i in range(n)]
    return lines


def _prepare(tmp_path: Path, root: Path, options: dict, entry_type: str = "csv_table", val_fraction: float = 0.25):
    manifest = tmp_path / "manifest.json"
    write_json(manifest, DATASETS.get(entry_type).fetch(tmp_path, {"root": str(root), **options}))
    entry = {"type": entry_type, "options": options, "val_fraction": val_fraction, "split_seed": 0}
    return prepare("mine", entry, str(manifest), 12, 10, str(tmp_path / "prepared" / "mine"))


def _nothing_written(tmp_path: Path) -> bool:
    return not (tmp_path / "prepared" / "mine").exists()


# -- labels and classes -------------------------------------------------------------------------------------------
def test_binary_with_a_stray_label_names_its_line_and_value(tmp_path):
    """The probe: task binary, no classes given, one 'Yes ' beside yes/no (it used to become a third class of a
    'binary' store, AUROC 1.000)."""
    lines = _balanced(("no", "yes"))
    lines[5] = lines[5].replace(",yes", ",Yes ").replace(",no", ",Yes ")   # line 7 of the file
    root = _csv_dataset(tmp_path, lines)
    with pytest.raises(LabelError) as err:
        _prepare(tmp_path, root, {"task": "binary", "label_columns": ["label"]})
    msg = str(err.value)
    assert "task 'binary' needs exactly two classes; the labels hold 3" in msg
    assert "'Yes ' (1 row: labels.csv line 7 ('img/no_val_1.png'))" in msg   # the row and the value, space kept
    assert "'no' (7 rows)" in msg and "'yes' (8 rows)" in msg
    assert "option 'classes'" in msg   # what to do
    assert _nothing_written(tmp_path)


def test_a_label_outside_the_given_classes_names_its_line(tmp_path):
    lines = _balanced(("no", "yes"))
    lines[9] = lines[9].replace(",yes", ",Yes ")   # line 11
    root = _csv_dataset(tmp_path, lines)
    with pytest.raises(LabelFileError, match=r"column 'label' has labels \['Yes '\] outside classes \['no', 'yes'\]: "
                                             r"labels.csv line 11: 'Yes '\. Fix the value, or add it to the "
                                             r"dataset's option 'classes'"):
        _prepare(tmp_path, root, {"task": "binary", "label_columns": ["label"], "classes": ["no", "yes"]})


def test_multiclass_stray_label_is_a_class_missing_from_splits_with_its_line(tmp_path):
    lines = _balanced(("a", "b", "c"))
    lines.append("img/extra.png,train,B")   # line 26: a typo makes a fourth class of one image
    root = _csv_dataset(tmp_path, lines)
    with pytest.raises(LabelError, match=r"class 'B' has no image in val or test \(train 1, val 0, test 0: "
                                         r"labels.csv line 26 \('img/extra.png'\)\)"):
        _prepare(tmp_path, root, {"task": "multiclass", "label_columns": ["label"]})


def test_multilabel_value_error_names_line_column_and_value(tmp_path):
    root = _csv_dataset(tmp_path, ["a.png,train,1,0", "b.png,train,0,1", "c.png,test,1,yes"], header="path,split,x,y")
    with pytest.raises(LabelFileError, match=r"must hold 0 or 1 \(1 value\(s\)\): labels.csv line 4, "
                                             r"column 'y': 'yes'\. Write 0 or 1"):
        read_csv_table({"root": str(root)}, {})
    root = _csv_dataset(tmp_path / "two", ["a.png,train,1,0", "b.png,train,0,2"], header="path,split,x,y")
    with pytest.raises(LabelFileError, match=r"hold values other than 0 and 1 \(1 value\(s\)\): labels.csv line 3, "
                                             r"column 'y': '2'"):
        read_csv_table({"root": str(root)}, {})


def test_line_numbers_count_blank_lines(tmp_path):
    """The line is the file's, as an editor shows it: a blank line in the file is counted, not skipped."""
    root = _csv_dataset(tmp_path, ["a.png,train,1", "", "b.png,train,x"], header="path,split,y")
    with pytest.raises(LabelFileError, match=r"labels.csv line 4, column 'y': 'x'"):
        read_csv_table({"root": str(root)}, {})


# -- splits ---------------------------------------------------------------------------------------------------------
def test_a_class_missing_from_a_split_is_refused(tmp_path):
    lines = [line for line in _balanced(("a", "b", "c")) if not line.startswith("img/c_test")]
    root = _csv_dataset(tmp_path, lines)
    with pytest.raises(LabelError) as err:
        _prepare(tmp_path, root, {"task": "multiclass", "label_columns": ["label"]})
    msg = str(err.value)
    assert "class 'c' has no image in test (train 4, val 2, test 0)" in msg
    assert "every class needs images in every split, else its metrics there would be undefined (NaN)" in msg
    assert "'split_seed' or 'val_fraction'" in msg and "merge it into another class" in msg
    assert _nothing_written(tmp_path)


def test_binary_class_missing_from_the_carved_validation_split(tmp_path):
    """No split column: the test split is drawn and val is carved; a class that ends up in none of val is named."""
    lines = [f"img/n{i}.png,no" for i in range(30)] + ["img/y0.png,yes", "img/y1.png,yes"]
    root = _csv_dataset(tmp_path, lines, header="path,label")
    with pytest.raises(LabelError, match=r"class 'yes' has no image in (train|val|test)"):
        _prepare(tmp_path, root, {"task": "binary", "label_columns": ["label"]})


def test_multilabel_needs_a_positive_in_train_and_warns_for_val_and_test(tmp_path, capfd):
    rows = [f"t{i}.png,train,1,{i % 2}" for i in range(8)] + ["v0.png,val,0,0", "v1.png,val,1,0",
                                                              "s0.png,test,1,1", "s1.png,test,0,0"]
    root = _csv_dataset(tmp_path, rows, header="path,split,x,y")
    store = _prepare(tmp_path, root, {})
    assert store.meta["counts"] == {"train": 8, "val": 2, "test": 2}
    err = capfd.readouterr().err
    assert ("[prepare] mine: warning: class 'y' has no positive image in the val split "
            "(positives: train 4/8, val 0/2, test 1/2): its val AUROC and AP are undefined") in err
    assert "class 'x' has no negative image in the train split" in err

    rows = [r.replace(",1,", ",0,", 1) if r.startswith("t") else r for r in rows]   # x: no positive in train
    root = _csv_dataset(tmp_path / "again", rows, header="path,split,x,y")
    with pytest.raises(LabelError, match=r"class 'x' has no positive image in train \(positives: train 0, val 1, "
                                         r"test 1: labels.csv line 11 \('v1.png'\); labels.csv line 12 \('s0.png'\)\)\. "
                                         r"In a multilabel task every class needs a positive in train"):
        _prepare(tmp_path / "again", root, {})


def test_patients_on_two_sides_of_a_given_split_are_a_warning(tmp_path, capfd):
    lines = [line + f",p{i % 4}" for i, line in enumerate(_balanced(("no", "yes")))]   # p0: lines 2, 6, ...
    root = _csv_dataset(tmp_path, lines, header="path,split,label,group")
    _prepare(tmp_path, root, {"task": "binary", "label_columns": ["label"]})
    assert "patient(s) have images in more than one split (e.g. 'p0'" in capfd.readouterr().err


# -- files -----------------------------------------------------------------------------------------------------------
def test_duplicate_paths_are_refused_naming_both_lines(tmp_path):
    """The same file twice (once as ./), with conflicting labels and splits: both lines named."""
    lines = _balanced(("no", "yes"))
    lines.append("./img/no_train_0.png,test,yes")   # line 18 repeats line 2
    root = _csv_dataset(tmp_path, lines)
    with pytest.raises(LabelError) as err:
        _prepare(tmp_path, root, {"task": "binary", "label_columns": ["label"]})
    msg = str(err.value)
    assert "1 image file(s) are listed more than once" in msg
    assert (f"{root.resolve() / 'img' / 'no_train_0.png'}: labels.csv line 2 ('img/no_train_0.png'), train, 'no' "
            "and labels.csv line 18 ('./img/no_train_0.png'), test, 'yes'") in msg
    assert "Remove the extra rows" in msg


def test_a_missing_image_names_its_line_before_any_decoding(tmp_path):
    lines = _balanced(("no", "yes"))
    root = _csv_dataset(tmp_path, lines)
    (root / "img" / "yes_val_0.png").unlink()   # line 14
    (root / "img" / "no_test_1.png").unlink()   # line 9
    with pytest.raises(StoreError) as err:
        _prepare(tmp_path, root, {"task": "binary", "label_columns": ["label"]})
    msg = str(err.value)
    assert "image file is missing; dataset 'mine' lists 2 file(s) that are not there" in msg
    assert f"labels.csv line 9 ('img/no_test_1.png'): {root.resolve() / 'img' / 'no_test_1.png'}" in msg
    assert "labels.csv line 14 ('img/yes_val_0.png')" in msg
    assert _nothing_written(tmp_path)


# -- csv_table options ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["group_column", "split_column"])
def test_a_named_column_must_exist(tmp_path, option):
    root = _csv_dataset(tmp_path, _balanced(("no", "yes")))
    with pytest.raises(LabelFileError) as err:
        read_csv_table({"root": str(root)}, {"task": "binary", "label_columns": ["label"], option: "patient"})
    msg = str(err.value)
    assert f"option '{option}' names column 'patient'" in msg
    assert "which is not in the file; columns are ['path', 'split', 'label']" in msg


def test_unnamed_group_and_split_columns_are_used_where_present(tmp_path):
    root = _csv_dataset(tmp_path, ["a.png,yes,P1,test", "b.png,no,P2,train"], header="path,label,group,split")
    raw = read_csv_table({"root": str(root)}, {"task": "binary", "label_columns": ["label"]})
    assert raw.table["group"].tolist() == ["P1", "P2"] and raw.table["split"].tolist() == ["test", "train"]
    root = _csv_dataset(tmp_path / "bare", ["a.png,yes", "b.png,no"], header="path,label")
    raw = read_csv_table({"root": str(root)}, {"task": "binary", "label_columns": ["label"]})
    assert raw.table["group"].tolist() == ["", ""] and set(raw.table["split"]) <= {"train", "test"}


def test_source_columns_do_not_reach_the_store(tmp_path):
    root = _csv_dataset(tmp_path, _balanced(("no", "yes")))
    store = _prepare(tmp_path, root, {"task": "binary", "label_columns": ["label"]})
    assert list(store.labels.columns) == ["index", "split", "group", "image_id", "no", "yes"]


# -- image_folder ---------------------------------------------------------------------------------------------------
def _folder(root: Path, layout: dict[str, int]) -> Path:
    for cls, n in layout.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _png(root / cls / f"{i}.png", value=20 + 7 * i)
    return root


def test_image_folder_refuses_an_empty_class_folder(tmp_path):
    root = _folder(tmp_path / "data", {"no": 3, "yes": 3, "maybe": 0})
    (root / "maybe" / "notes.txt").write_text("no image here")
    with pytest.raises(LabelFileError, match=r"class folder\(s\) \['maybe'\] hold no image files .* "
                                             r"Put its images in, or remove the folder"):
        read_image_folder({"root": str(root)}, {})


def test_image_folder_skips_hidden_files(tmp_path):
    root = _folder(tmp_path / "data", {"no": 3, "yes": 3})
    (root / "yes" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")   # macOS resource fork
    (root / "yes" / ".DS_Store").write_bytes(b"\x00")
    _png(root / "yes" / ".thumbs" / "t.png")   # inside a hidden folder
    raw = read_image_folder({"root": str(root)}, {})
    assert sorted(raw.table["image_id"]) == [f"{c}/{i}.png" for c in ("no", "yes") for i in range(3)]


@pytest.mark.parametrize("split_folder", ["train", "Training", "valid", "validation", "test"])
def test_image_folder_refuses_split_shaped_layouts(tmp_path, split_folder):
    root = tmp_path / "data"
    _folder(root / split_folder, {"no": 2, "yes": 2})
    _folder(root / "other", {"no": 2, "yes": 2})
    with pytest.raises(LabelFileError) as err:
        read_image_folder({"root": str(root)}, {})
    msg = str(err.value)
    assert f"sub-folders ['{split_folder}'] are named like splits, not classes" in msg
    assert "'split_folders: true'" in msg and "csv_table with a split column" in msg


def test_image_folder_split_folders(tmp_path, capfd):
    root = tmp_path / "data"
    _folder(root / "train", {"no": 4, "yes": 4})
    _folder(root / "test", {"no": 2, "yes": 2})
    raw = read_image_folder({"root": str(root)}, {"split_folders": True})
    assert raw.classes == ["no", "yes"] and raw.task == "binary"
    assert raw.table.groupby("split").size().to_dict() == {"test": 4, "train": 8}
    assert (raw.table["split"] == raw.table["image_id"].str.split("/").str[0]).all()
    store = _prepare(tmp_path, root, {"split_folders": True}, entry_type="image_folder", val_fraction=0.5)
    assert store.meta["counts"] == {"train": 4, "val": 4, "test": 4}
    # a class folder missing from test is named by the shared check; a stray folder beside the splits is refused
    for f in (root / "test" / "yes").iterdir():
        f.unlink()
    (root / "test" / "yes").rmdir()
    with pytest.raises(LabelError, match=r"class 'yes' has no image in test"):
        _prepare(tmp_path, root, {"split_folders": True}, entry_type="image_folder", val_fraction=0.5)
    _folder(root / "extra", {"no": 1})
    with pytest.raises(LabelFileError, match=r"'split_folders' expects only split folders .* found \['extra'\]"):
        read_image_folder({"root": str(root)}, {"split_folders": True})


# -- every source, not only the adapters ----------------------------------------------------------------------------
def test_array_sources_pass_the_same_check(tmp_path):
    """MedMNIST-layout .npz (no files, no CSV): a class present only in train is refused like any other."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % (3 if split == "train" else 2)).reshape(-1, 1)
    np.savez(tmp_path / "three.npz", **arrays)
    spec = DATASETS.get("medmnist_npz")
    write_json(tmp_path / "manifest.json", spec.fetch(tmp_path, {**spec.options, "path": str(tmp_path / "three.npz")}))
    entry = {"type": "medmnist_npz", "options": {"path": str(tmp_path / "three.npz")}, "val_fraction": 0.2,
             "split_seed": 0}
    with pytest.raises(LabelError, match=r"has no image in val or test \(train 4, val 0, test 0\)"):
        prepare("npz", entry, str(tmp_path / "manifest.json"), 28, 28, str(tmp_path / "prepared" / "npz"))


def test_validate_labels_directly():
    table = pd.DataFrame({"split": ["train", "train", "val", "test"], "group": "", "image_id": list("abcd"),
                          "no": [1, 0, 1, 0], "yes": [0, 1, 0, 1]})
    with pytest.raises(LabelError, match=r"class 'no' has no image in test .*; class 'yes' has no image in val"):
        validate_labels("t", table, ["no", "yes"], "binary")
    table.loc[3, ["no", "yes"]] = [1, 1]
    with pytest.raises(LabelError, match=r"a binary image has exactly one class; 1 row\(s\) have several: "
                                         r"image 'd', test, no\+yes"):
        validate_labels("t", table, ["no", "yes"], "binary")


# -- real data ------------------------------------------------------------------------------------------------------
def need(folder: str) -> Path:
    path = SHARED / folder
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


@pytest.mark.realdata
def test_brain_mri_csv_with_a_stray_label_is_refused_before_decoding(tmp_path):
    """The probe on the real set: its labels.csv copied with one 'yes' written 'Yes ' and the real paths."""
    root = need("brain_mri_tumor_yesno")
    labels = pd.read_csv(root / "labels.csv")
    labels["label"] = labels["label"].map({"no_tumor": "no", "tumor": "yes"})
    labels["image"] = [str(root / p) for p in labels["image"]]
    labels.loc[40, "label"] = "Yes "
    labels.to_csv(tmp_path / "labels.csv", index=False)
    options = {"path_column": "image", "label_columns": ["label"], "task": "binary", "channels": 1}
    with pytest.raises(LabelError) as err:
        _prepare(tmp_path, tmp_path, options)
    assert f"'Yes ' (1 row: labels.csv line 42 ('{labels.loc[40, 'image']}'))" in str(err.value)
    with pytest.raises(LabelFileError, match=r"labels.csv line 42: 'Yes '"):
        _prepare(tmp_path, tmp_path, {**options, "classes": ["no", "yes"]})
    labels.loc[40, "label"] = "yes"
    labels.loc[len(labels)] = labels.loc[7].to_dict() | {"label": "yes"}   # no/... again, now 'yes': line 255
    labels.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(LabelError, match=r"labels.csv line 9 .* and labels.csv line 255 "):
        _prepare(tmp_path, tmp_path, options)


@pytest.mark.realdata
def test_brain_mri_folder_layout_mistakes(tmp_path):
    """The real yes/ and no/ folders (linked, not copied): an empty class folder and a train/<class> layout are
    refused; read as split folders, the same files prepare."""
    root = need("brain_mri_tumor_yesno")
    data = tmp_path / "data"
    data.mkdir()
    for cls in ("no", "yes"):
        os.symlink(root / cls, data / cls)
    (data / "maybe").mkdir()
    with pytest.raises(LabelFileError, match=r"\['maybe'\] hold no image files"):
        read_image_folder({"root": str(data)}, {})
    (data / "maybe").rmdir()
    assert read_image_folder({"root": str(data)}, {}).classes == ["no", "yes"]

    split = tmp_path / "split"
    for name, cls in (("train", "no"), ("train", "yes"), ("test", "no"), ("test", "yes")):
        (split / name / cls).mkdir(parents=True)
        files = sorted((root / cls).iterdir())
        for f in files[:12] if name == "train" else files[12:16]:
            os.symlink(f, split / name / cls / f.name)
    with pytest.raises(LabelFileError, match=r"sub-folders \['test', 'train'\] are named like splits"):
        read_image_folder({"root": str(split)}, {})
    store = _prepare(tmp_path, split, {"split_folders": True}, entry_type="image_folder", val_fraction=0.3)
    assert store.classes == ["no", "yes"] and store.meta["counts"]["test"] == 8
    assert (store.labels.groupby("split")[["no", "yes"]].sum() > 0).all().all()


@pytest.mark.realdata
def test_kather_tiles_with_one_tile_per_class_and_split(tmp_path):
    """24 real tiles, 3 per class: a drawn split cannot put every class in train, val and test (the shared check
    refuses it); split folders with one tile of each class per split can."""
    root = need("kather2016_crc_tiles")
    with pytest.raises(LabelError, match=r"every class needs images in every split"):
        _prepare(tmp_path / "drawn", root, {}, entry_type="image_folder")
    data = tmp_path / "split"
    for cls in sorted(d.name for d in root.iterdir() if d.is_dir()):
        for split, tile in zip(("train", "val", "test"), sorted((root / cls).iterdir())):
            (data / split / cls).mkdir(parents=True)
            os.symlink(tile, data / split / cls / tile.name)
    store = _prepare(tmp_path, data, {"split_folders": True}, entry_type="image_folder")
    assert len(store.classes) == 8 and store.meta["counts"] == {"train": 8, "val": 8, "test": 8}
    assert (store.labels.groupby("split")[store.classes].sum() == 1).all().all()
