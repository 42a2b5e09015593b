"""Every real-data source, end to end on a tiny archive built here in the source's own file
layout and naming: obtained (served over HTTP from 127.0.0.1, or put by hand into the
raw-data folder), verified, unpacked, parsed and prepared into a store. Plus the
failures a user meets: missing manual file, corrupt archive, wrong checksum and a
malformed label file, each named in the error."""
from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_server import serve
from medtl.data import DATASETS
from medtl.data.adapters import LabelFileError
from medtl.data.download import ChecksumError
from medtl.data.options import declared_options
from medtl.data.prepare import LabelError, carve_validation, prepare
from medtl.data.sources import SOURCES
from medtl.data.sources.common import ArchiveError, ManualDownloadError
from medtl.io import write_json

REPO = Path(__file__).resolve().parents[1]
FAST = {"retries": 1, "backoff": 0.01}


# -- helpers --------------------------------------------------------------------------------------
def png(value: int = 128, size=(12, 10), mode="L", fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, value if mode == "L" else (value, 255 - value, 60)).save(buf, format=fmt)
    return buf.getvalue()


def make_zip(path: Path, files: dict[str, bytes | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def zip_bytes(files: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_gz_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fetch(name: str, tmp_path: Path, options: dict) -> Path:
    """Run the dataset's fetch as the workflow does; return the manifest file. The options must pass the
    config check, as a user's would have to."""
    spec = DATASETS.get(name)
    problems = declared_options(spec.options).problems(options, f"{name}.options")
    assert not problems, problems
    raw_dir = tmp_path / "results" / "raw" / name
    # raw_data defaults to an empty folder of this test, never ./raw of whoever runs it
    manifest = spec.fetch(raw_dir, {**spec.options, **FAST, "raw_data": str(tmp_path / "raw"), **options})
    path = raw_dir / "manifest.json"
    write_json(path, manifest)
    return path


def fetch_and_prepare(name: str, tmp_path: Path, options: dict, val_fraction: float = 0.25):
    manifest = fetch(name, tmp_path, options)
    entry = {"type": name, "options": options, "val_fraction": val_fraction, "split_seed": 0}
    return prepare(name, entry, str(manifest), 16, 16, str(tmp_path / "results" / "prepared" / name / "r16_c16"))


@pytest.fixture
def server():
    with serve() as state:
        yield state


@pytest.fixture
def raw_data(tmp_path) -> Path:
    """The config's raw_data folder, where login-only archives are put by hand."""
    return tmp_path / "raw"


# -- CheXpert -------------------------------------------------------------------------------------
CHEXPERT_COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
                    "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia",
                    "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
                    "Support Devices"]


def chexpert_zip(path: Path, bad_value: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    files: dict[str, bytes | str] = {}
    rows = {"train": [], "valid": []}
    for split, n_patients, first in (("train", 12, 1), ("valid", 3, 64541)):
        for p in range(first, first + n_patients):
            for view in (1, 2):
                side = "frontal" if view == 1 else "lateral"
                rel = f"CheXpert-v1.0-small/{split}/patient{p:05d}/study1/view{view}_{side}.jpg"
                files[rel] = png(int(rng.integers(0, 255)), fmt="JPEG")
                values = {c: "" for c in CHEXPERT_COLUMNS[5:]}
                for c in ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion"):
                    values[c] = rng.choice(["1.0", "0.0", "-1.0", ""] if split == "train" else ["1.0", "0.0"])
                rows[split].append({"Path": rel, "Sex": "Female", "Age": "60",
                                    "Frontal/Lateral": "Frontal" if view == 1 else "Lateral",
                                    "AP/PA": "AP" if view == 1 else "", **values})
    # the rows the label-policy test looks at
    rows["train"][0].update({"Atelectasis": "-1.0", "Edema": "-1.0", "Cardiomegaly": "-1.0",
                             "Consolidation": "", "Pleural Effusion": "1.0"})
    if bad_value is not None:
        rows["train"][3]["Edema"] = bad_value
    for split in rows:
        table = pd.DataFrame(rows[split], columns=CHEXPERT_COLUMNS)
        files[f"CheXpert-v1.0-small/{split}.csv"] = table.to_csv(index=False)
    return make_zip(path, files)


def test_chexpert_manual_archive_is_prepared_with_the_label_policy(tmp_path, raw_data):
    chexpert_zip(raw_data / "chexpert" / "CheXpert-v1.0-small.zip")
    store = fetch_and_prepare("chexpert", tmp_path, {"raw_data": str(raw_data)})
    assert store.task == "multilabel"
    assert store.classes == ["cardiomegaly", "edema", "consolidation", "atelectasis", "pleural_effusion"]
    counts = store.meta["counts"]
    assert counts["test"] == 6 and counts["train"] + counts["val"] == 24   # valid.csv is the test set
    first = store.labels[store.labels["image_id"].str.endswith("patient00001/study1/view1_frontal.jpg")].iloc[0]
    # U-Ones for atelectasis and edema, U-Zeros for cardiomegaly, blank -> 0
    assert (first["atelectasis"], first["edema"], first["cardiomegaly"], first["consolidation"],
            first["pleural_effusion"]) == (1, 1, 0, 0, 1)
    # patients are never split across train and val
    tv = store.labels[store.labels["split"] != "test"]
    assert tv.groupby("group")["split"].nunique().max() == 1
    assert store.meta["primary_metric"] == "map"


def test_chexpert_policies_are_options(tmp_path, raw_data):
    chexpert_zip(raw_data / "chexpert" / "CheXpert-v1.0-small.zip")
    spec = DATASETS.get("chexpert")
    manifest = json.loads(fetch("chexpert", tmp_path, {"raw_data": str(raw_data)}).read_text())
    zeros = spec.read(manifest, {**spec.options, "uncertain": {"atelectasis": "zeros"}})
    assert zeros.table.loc[0, "atelectasis"] == 0 and zeros.table.loc[0, "edema"] == 1   # others keep defaults
    ignore = spec.read(manifest, {**spec.options, "uncertain": "ignore"})
    assert len(ignore.table) < len(zeros.table)
    assert not ignore.table["image_id"].str.endswith("patient00001/study1/view1_frontal.jpg").any()
    frontal = spec.read(manifest, {**spec.options, "frontal_only": True})
    assert len(frontal.table) == 15


def test_chexpert_missing_archive_says_where_to_get_it_and_where_to_put_it(tmp_path, raw_data):
    with pytest.raises(ManualDownloadError) as err:
        fetch("chexpert", tmp_path, {"raw_data": str(raw_data)})
    msg = str(err.value)
    assert "stanfordaimi.azurewebsites.net" in msg
    assert "'CheXpert-v1.0-small.zip'" in msg
    assert str((raw_data / "chexpert").resolve()) in msg


def test_chexpert_malformed_label_is_named(tmp_path, raw_data):
    chexpert_zip(raw_data / "chexpert" / "CheXpert-v1.0-small.zip", bad_value="2.0")
    spec = DATASETS.get("chexpert")
    manifest = json.loads(fetch("chexpert", tmp_path, {"raw_data": str(raw_data)}).read_text())
    with pytest.raises(LabelFileError, match=r"train\.csv: column 'Edema' holds '2\.0'"):
        spec.read(manifest, spec.options)


def test_corrupt_manual_archive_is_named(tmp_path, raw_data):
    archive = raw_data / "chexpert" / "CheXpert-v1.0-small.zip"
    good = chexpert_zip(tmp_path / "good.zip").read_bytes()
    archive.parent.mkdir(parents=True)
    archive.write_bytes(good[: len(good) // 2])   # truncated copy
    with pytest.raises(ArchiveError, match=r"CheXpert-v1\.0-small\.zip: (corrupt|not a zip)"):
        fetch("chexpert", tmp_path, {"raw_data": str(raw_data)})
    assert not (tmp_path / "results" / "raw" / "chexpert" / "extracted").exists()


# -- MURA -----------------------------------------------------------------------------------------
def mura_zip(path: Path, drop_study: bool = False) -> Path:
    files: dict[str, bytes | str] = {}
    for split, patients in (("train", range(1, 11)), ("valid", range(11201, 11204))):
        image_rows, study_rows = [], []
        for part in ("XR_SHOULDER", "XR_WRIST"):
            for p in patients:
                label = (p + len(part)) % 2
                study = f"MURA-v1.1/{split}/{part}/patient{p:05d}/study1_{'positive' if label else 'negative'}/"
                study_rows.append(f"{study},{label}")
                for i in (1, 2):
                    files[f"{study}image{i}.png"] = png(40 * i + p % 50)
                    image_rows.append(f"{study}image{i}.png")
        if drop_study:
            study_rows = study_rows[1:]
        files[f"MURA-v1.1/{split}_image_paths.csv"] = "\n".join(image_rows) + "\n"
        files[f"MURA-v1.1/{split}_labeled_studies.csv"] = "\n".join(study_rows) + "\n"
    return make_zip(path, files)


def test_mura_body_part_from_the_shared_archive(tmp_path, raw_data):
    mura_zip(raw_data / "mura" / "MURA-v1.1.zip")
    store = fetch_and_prepare("mura_shoulder", tmp_path, {"raw_data": str(raw_data)}, val_fraction=0.4)
    assert store.task == "binary" and store.classes == ["normal", "abnormal"]
    assert store.labels["image_id"].str.contains("XR_SHOULDER").all()
    assert store.meta["counts"]["test"] == 6 and len(store.labels) == 26
    study_label = store.labels["image_id"].str.contains("_positive").astype(int)
    assert (store.labels["abnormal"] == study_label).all()
    extracted = tmp_path / "results" / "raw" / "mura_shoulder" / "extracted"
    assert not list(extracted.rglob("XR_WRIST"))   # only its own body part was unpacked
    assert store.meta["metrics"] == ["accuracy", "kappa"]  # Tables 4-6; Table 11's gain is in accuracy
    wrist = fetch_and_prepare("mura_wrist", tmp_path, {"raw_data": str(raw_data)}, val_fraction=0.4)
    assert wrist.labels["image_id"].str.contains("XR_WRIST").all()


def test_mura_study_without_label_is_named(tmp_path, raw_data):
    mura_zip(raw_data / "mura" / "MURA-v1.1.zip", drop_study=True)
    spec = DATASETS.get("mura_shoulder")
    manifest = json.loads(fetch("mura_shoulder", tmp_path, {"raw_data": str(raw_data)}).read_text())
    with pytest.raises(LabelFileError, match=r"train_labeled_studies\.csv: no label for study"):
        spec.read(manifest, spec.options)


# -- brain tumour MRI (figshare, .mat v7.3) -------------------------------------------------------
def mat_v73(image: np.ndarray, label: int, pid: str) -> bytes:
    h5py = pytest.importorskip("h5py")
    buf = io.BytesIO()
    with h5py.File(buf, "w", userblock_size=512) as f:   # MATLAB v7.3: HDF5 after a 512-byte header
        cj = f.create_group("cjdata")
        cj.create_dataset("image", data=image.T.astype(np.int16))   # MATLAB writes column-major
        cj.create_dataset("label", data=np.array([[float(label)]]))
        cj.create_dataset("PID", data=np.array([[ord(c)] for c in pid], dtype=np.uint16))
        cj.create_dataset("tumorMask", data=np.zeros(image.T.shape, np.uint8))
    data = bytearray(buf.getvalue())
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2015 HDF5 schema 1.00 ."
    data[: len(header)] = header
    return bytes(data)


def brain_parts() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    parts, n = {}, 0
    for name in ("brainTumorDataPublic_1-766.zip", "brainTumorDataPublic_767-1532.zip",
                 "brainTumorDataPublic_1533-2298.zip", "brainTumorDataPublic_2299-3064.zip"):
        files = {}
        for _ in range(6):
            n += 1
            image = rng.integers(-50, 900, size=(20, 16))
            image[:5, :3] = 1000   # an asymmetric mark, to check the transpose
            files[f"{n}.mat"] = mat_v73(image, label=1 + n % 3, pid=f"{100000 + n % 8}")
        parts[name] = zip_bytes(files)
    return parts


def test_brain_tumor_mri_download_convert_prepare(server, tmp_path):
    parts = brain_parts()
    urls = {name: server.add(f"/ndownloader/files/{i}", data) for i, (name, data) in enumerate(parts.items())}
    checksums = {name: "md5:" + md5(data) for name, data in parts.items()}
    store = fetch_and_prepare("brain_tumor_mri", tmp_path, {"urls": urls, "checksums": checksums})
    assert store.task == "multiclass" and store.classes == ["meningioma", "glioma", "pituitary"]
    assert len(store.labels) == 24 and store.labels[store.classes].sum().tolist() == [8, 8, 8]
    assert store.labels.groupby("group")["split"].nunique().max() == 1   # patient-wise
    png_file = tmp_path / "results" / "raw" / "brain_tumor_mri" / "images" / "1.png"
    arr = np.asarray(Image.open(png_file))
    assert arr.shape == (20, 16) and arr[:5, :3].min() == 255   # transposed back, scaled to 8 bits
    assert not list((tmp_path / "results" / "raw" / "brain_tumor_mri" / "downloads").glob("*.part"))


def test_wrong_checksum_stops_and_keeps_no_file(server, tmp_path):
    parts = brain_parts()
    urls = {name: server.add(f"/f/{i}", data) for i, (name, data) in enumerate(parts.items())}
    checksums = {name: "md5:" + md5(data) for name, data in parts.items()}
    checksums["brainTumorDataPublic_767-1532.zip"] = "md5:" + "0" * 32
    with pytest.raises(ChecksumError, match=r"brainTumorDataPublic_767-1532\.zip.*md5 checksum mismatch"):
        fetch("brain_tumor_mri", tmp_path, {"urls": urls, "checksums": checksums})
    downloads = tmp_path / "results" / "raw" / "brain_tumor_mri" / "downloads"
    assert not (downloads / "brainTumorDataPublic_767-1532.zip").exists()
    assert not (downloads / "brainTumorDataPublic_767-1532.zip.part").exists()


def test_brain_tumor_mat_that_is_not_hdf5_is_named(server, tmp_path):
    pytest.importorskip("h5py")
    parts = brain_parts()
    parts["brainTumorDataPublic_1-766.zip"] = zip_bytes({"1.mat": b"MATLAB 5.0 MAT-file, not HDF5"})
    urls = {name: server.add(f"/f/{i}", data) for i, (name, data) in enumerate(parts.items())}
    with pytest.raises(ArchiveError, match=r"1\.mat: not a readable MATLAB v7\.3"):
        fetch("brain_tumor_mri", tmp_path, {"urls": urls})


# -- BACH -----------------------------------------------------------------------------------------
def bach_zip() -> bytes:
    files: dict[str, bytes] = {}
    for folder, prefix in (("Normal", "n"), ("Benign", "b"), ("InSitu", "is"), ("Invasive", "iv")):
        for i in range(1, 11):
            files[f"ICIAR2018_BACH_Challenge/Photos/{folder}/{prefix}{i:03d}.tif"] = png(20 * i, mode="RGB", fmt="TIFF")
        files["ICIAR2018_BACH_Challenge/Photos/microscopy_ground_truth.csv"] = b"n001.tif,Normal\n"
    files["ICIAR2018_BACH_Challenge/WSI/A01.svs"] = b"whole slide, not unpacked"
    return zip_bytes(files)


def test_bach_download_and_block_split(server, tmp_path):
    data = bach_zip()
    url = server.add("/records/3632035/files/ICIAR2018_BACH_Challenge.zip", data)
    name = "ICIAR2018_BACH_Challenge.zip"
    store = fetch_and_prepare("bach", tmp_path, {"urls": {name: url}, "checksums": {name: md5(data)}})
    assert store.classes == ["normal", "benign", "in_situ", "invasive"] and store.task == "multiclass"
    assert store.meta["counts"]["test"] == 4   # the last 10 % of each class (Table 2: 360 / 40 of 400)
    assert sorted(store.labels.loc[store.labels["split"] == "test", "image_id"]) == [
        "Benign/b010.tif", "InSitu/is010.tif", "Invasive/iv010.tif", "Normal/n010.tif"]
    assert store.meta["metrics"] == ["accuracy", "kappa"]
    assert store.images.shape[-1] == 3
    assert not list((tmp_path / "results" / "raw" / "bach" / "extracted").rglob("*.svs"))


def test_bach_published_checksum_rejects_other_bytes(server, tmp_path):
    url = server.add("/bach.zip", bach_zip())
    with pytest.raises(ChecksumError, match="8ae1801334aa943c44627c1eef3631b2"):
        fetch("bach", tmp_path, {"urls": {"ICIAR2018_BACH_Challenge.zip": url}})


# -- ISIC 2020 ------------------------------------------------------------------------------------
def test_isic2020_duplicates_removed_patient_wise_split(server, tmp_path):
    rows, images = [], {}
    for i in range(30):
        name = f"ISIC_{1000000 + i:07d}"
        rows.append({"image_name": name, "patient_id": f"IP_{i // 3:07d}", "lesion_id": f"IL_{i:07d}",
                     "sex": "male", "age_approx": "45.0", "anatom_site_general_challenge": "torso",
                     "diagnosis": "melanoma" if i % 5 == 0 else "nevus",
                     "benign_malignant": "malignant" if i % 5 == 0 else "benign", "target": str(int(i % 5 == 0))})
        images[f"train/{name}.jpg"] = png(7 * i, mode="RGB", fmt="JPEG")
    dups = "image_name_1,image_name_2\nISIC_1000000,ISIC_1000001\nISIC_1000003,ISIC_1000004\n"
    gt = pd.DataFrame(rows).to_csv(index=False).encode()
    urls = {"ISIC_2020_Training_GroundTruth_v2.csv": server.add("/2020/gt.csv", gt),
            "ISIC_2020_Training_Duplicates.csv": server.add("/2020/dups.csv", dups.encode()),
            "ISIC_2020_Training_JPEG.zip": server.add("/2020/jpeg.zip", zip_bytes(images))}
    store = fetch_and_prepare("isic2020", tmp_path, {"urls": urls, "test_fraction": 0.3})
    assert store.classes == ["benign", "malignant"] and store.task == "binary"
    assert len(store.labels) == 28
    assert not store.labels["image_id"].isin(["ISIC_1000001", "ISIC_1000004"]).any()
    assert store.labels.groupby("group")["split"].nunique().max() == 1
    assert store.labels["malignant"].sum() == 6
    assert store.meta["metrics"] == ["auroc", "accuracy"]  # the first study's Table 9


# -- CholecT50 ------------------------------------------------------------------------------------
def cholect50_zip(path: Path) -> Path:
    files: dict[str, bytes | str] = {}
    categories = {"instrument": {str(i): n for i, n in
                                 enumerate(["grasper", "bipolar", "hook", "scissors", "clipper", "irrigator"])}}
    for vid in (1, 8, 6):   # one train, one val, one test video of the official split
        annotations = {}
        for frame in range(30):
            files[f"CholecT50/videos/VID{vid:02d}/{frame:06d}.png"] = png(frame * 8, mode="RGB")
            tool = (frame // 10 + vid) % 6
            annotations[str(frame)] = [
                [17, tool, 1, 0.1, 0.1, 0.2, 0.2, 2, 0, -1, -1, -1, -1, -1, 1],
                [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 1],   # a null instance
            ] if frame % 3 else []
            if vid == 1 and frame == 20:   # every instrument once in the train video: each class has a positive in train
                annotations[str(frame)] = [[17, t, 1, 0.1, 0.1, 0.2, 0.2, 2, 0, -1, -1, -1, -1, -1, 1] for t in range(6)]
        files[f"CholecT50/labels/VID{vid:02d}.json"] = json.dumps(
            {"video": vid, "fps": 1, "num_frames": 30, "categories": categories, "annotations": annotations})
    files["CholecT50/label_mapping.txt"] = "# IVT, I, V, T, IV, IT\n17,0,2,0,2,0\n"
    return make_zip(path, files)


def test_cholect50_instruments_six_frames_per_minute_official_split(tmp_path, raw_data):
    cholect50_zip(raw_data / "cholect50" / "CholecT50.zip")
    store = fetch_and_prepare("cholect50", tmp_path, {"raw_data": str(raw_data)})
    assert store.task == "multilabel" and store.classes[:3] == ["grasper", "bipolar", "hook"]
    assert store.meta["counts"] == {"train": 3, "val": 3, "test": 3}   # frames 0, 10, 20 of each video
    assert set(store.labels["image_id"].str[-6:]) == {"000000", "000010", "000020"}
    frame10 = store.labels[store.labels["image_id"] == "VID01/000010"].iloc[0]
    assert frame10[store.classes].tolist() == [0, 0, 1, 0, 0, 0]   # tool (1 + 1) % 6 = hook
    frame0 = store.labels[store.labels["image_id"] == "VID01/000000"].iloc[0]
    assert frame0[store.classes].sum() == 0   # no instrument in view
    unpacked = list((tmp_path / "results" / "raw" / "cholect50" / "extracted").rglob("*.png"))
    assert len(unpacked) == 9   # only the sampled frames were unpacked


def test_cholect50_malformed_json_is_named(tmp_path, raw_data):
    archive = cholect50_zip(tmp_path / "c.zip")
    with zipfile.ZipFile(archive) as src:
        files = {n: src.read(n) for n in src.namelist()}
    files["CholecT50/labels/VID08.json"] = b'{"annotations": {"0": [[1, 2'
    make_zip(raw_data / "cholect50" / "CholecT50.zip", files)
    spec = DATASETS.get("cholect50")
    manifest = json.loads(fetch("cholect50", tmp_path, {"raw_data": str(raw_data)}).read_text())
    with pytest.raises(LabelFileError, match=r"VID08\.json: malformed label file"):
        spec.read(manifest, spec.options)


# -- ChestX-ray14 ---------------------------------------------------------------------------------
def chestxray14_files(raw: Path) -> dict[str, bytes]:
    # every finding in a train patient: each class has a positive in train
    findings = ["No Finding", "Effusion|Mass", "Cardiomegaly", "Hernia|Pleural_Thickening",
                "Atelectasis|Infiltration|Nodule|Pneumonia|Pneumothorax|Consolidation|Edema|Emphysema|Fibrosis"]
    rows, train, test, tars = [], [], [], {"images_001.tar.gz": {}, "images_002.tar.gz": {}}
    for p in range(1, 13):
        for k in range(2):
            name = f"{p:08d}_{k:03d}.png"
            rows.append({"Image Index": name, "Finding Labels": findings[(p + k) % 5], "Follow-up #": str(k),
                         "Patient ID": str(p), "Patient Age": "50", "Patient Gender": "M", "View Position": "PA",
                         "OriginalImage[Width": "2500", "Height]": "2048", "OriginalImagePixelSpacing[x": "0.143",
                         "y]": "0.143"})
            (test if p > 9 else train).append(name)
            tars["images_001.tar.gz" if p <= 6 else "images_002.tar.gz"][f"images/{name}"] = png(p * 9)
    folder = raw / "chestxray14"
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "Data_Entry_2017_v2020.csv", index=False)
    (folder / "train_val_list.txt").write_text("\n".join(train) + "\n")
    (folder / "test_list.txt").write_text("\n".join(test) + "\n")
    return {name: tar_gz_bytes(members) for name, members in tars.items()}


def test_chestxray14_official_split_from_label_files_and_tarballs(server, tmp_path, raw_data):
    tars = chestxray14_files(raw_data)
    urls = {name: server.add(f"/shared/static/{name}", data) for name, data in tars.items()}
    checksums = {name: md5(data) for name, data in tars.items()}
    store = fetch_and_prepare("chestxray14", tmp_path, {"raw_data": str(raw_data), "urls": urls,
                                                        "checksums": checksums, "image_archives": [1, 2]})
    assert store.task == "multilabel" and len(store.classes) == 14
    assert store.classes[-2:] == ["pleural_thickening", "hernia"]
    assert store.meta["counts"]["test"] == 6
    assert set(store.labels.loc[store.labels["split"] == "test", "group"]) == {"10", "11", "12"}
    row = store.labels[store.labels["image_id"] == "00000001_000.png"].iloc[0]   # 'Effusion|Mass'
    assert row["effusion"] == 1 and row["mass"] == 1 and row[store.classes].sum() == 2
    assert store.labels.groupby("group")["split"].nunique().max() == 1


def test_chestxray14_missing_label_file_fails_before_any_download(server, tmp_path, raw_data):
    tars = chestxray14_files(raw_data)
    (raw_data / "chestxray14" / "Data_Entry_2017_v2020.csv").unlink()
    urls = {name: server.add(f"/s/{name}", data) for name, data in tars.items()}
    with pytest.raises(ManualDownloadError) as err:
        fetch("chestxray14", tmp_path, {"raw_data": str(raw_data), "urls": urls, "image_archives": [1, 2]})
    msg = str(err.value)
    assert "'Data_Entry_2017_v2020.csv'" in msg and "nihcc.app.box.com" in msg
    assert str((raw_data / "chestxray14").resolve()) in msg
    assert server.requests == []   # failed fast: no tarball was fetched


def test_chestxray14_truncated_tarball_is_named(server, tmp_path, raw_data):
    tars = chestxray14_files(raw_data)
    tars["images_002.tar.gz"] = tars["images_002.tar.gz"][:-120]   # cut short, no checksum to catch it
    urls = {name: server.add(f"/s/{name}", data) for name, data in tars.items()}
    with pytest.raises(ArchiveError, match=r"images_002\.tar\.gz: corrupt or truncated archive"):
        fetch("chestxray14", tmp_path, {"raw_data": str(raw_data), "urls": urls, "verify": False,
                                        "image_archives": [1, 2]})
    extracted = tmp_path / "results" / "raw" / "chestxray14" / "extracted"
    assert (extracted / "images_001" / ".extracted").exists()   # the good archive stays unpacked
    assert not (extracted / "images_002").exists() and not (extracted / "images_002.partial").exists()


def test_chestxray14_unknown_finding_is_named(server, tmp_path, raw_data):
    tars = chestxray14_files(raw_data)
    csv = raw_data / "chestxray14" / "Data_Entry_2017_v2020.csv"
    csv.write_text(csv.read_text().replace("Cardiomegaly", "Cardiomegally", 1))
    urls = {name: server.add(f"/s/{name}", data) for name, data in tars.items()}
    spec = DATASETS.get("chestxray14")
    manifest = json.loads(fetch("chestxray14", tmp_path, {"raw_data": str(raw_data), "urls": urls, "verify": False,
                                                          "image_archives": [1, 2]}).read_text())
    with pytest.raises(LabelFileError, match=r"Data_Entry_2017_v2020\.csv: unknown finding\(s\) \['Cardiomegally'\]"):
        spec.read(manifest, spec.options)


# -- HAM10000 (Harvard Dataverse) -----------------------------------------------------------------
def test_ham10000_dataverse_download_lesion_wise_split(server, tmp_path):
    classes = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    rows, part1, part2 = [], {}, {}
    for i in range(28):
        image_id = f"ISIC_{24306 + i:07d}"
        rows.append({"lesion_id": f"HAM_{i // 2:07d}", "image_id": image_id, "dx": classes[(i // 2) % 7],
                     "dx_type": "histo", "age": "50.0", "sex": "male", "localization": "back"})
        (part1 if i < 14 else part2)[f"{image_id}.jpg"] = png(9 * i, mode="RGB", fmt="JPEG")
    blobs = {"HAM10000_metadata.csv": pd.DataFrame(rows).to_csv(index=False).encode(),
             "HAM10000_images_part_1.zip": zip_bytes(part1), "HAM10000_images_part_2.zip": zip_bytes(part2)}
    listing = {"status": "OK", "data": {"latestVersion": {"files": []}}}
    for file_id, (name, data) in enumerate(blobs.items(), start=11):
        server.add(f"/api/access/datafile/{file_id}", data)
        data_file = {"id": file_id, "filename": name.replace(".csv", ".tab"), "md5": md5(data)}
        if name.endswith(".csv"):
            data_file["originalFileName"] = name
        listing["data"]["latestVersion"]["files"].append({"label": name, "dataFile": data_file})
    server.add("/api/datasets/:persistentId/", json.dumps(listing).encode())
    options = {"dataverse_server": server.base, "test_fraction": 0.3}
    # 2 lesions per class cannot put every class in train, val and test: prepare refuses it (issue 22), so the
    # source's table is checked as read, with the validation split carved as prepare carves it
    with pytest.raises(LabelError, match=r"class '\w+' has no image in"):
        fetch_and_prepare("ham10000", tmp_path, options)
    spec = DATASETS.get("ham10000")
    raw = spec.read(json.loads(fetch("ham10000", tmp_path, options).read_text()), {**spec.options, **options})
    table = carve_validation(raw.table, 0.25, 0)
    assert raw.classes == classes and raw.task == "multiclass"
    assert len(table) == 28 and set(table["split"]) == {"train", "val", "test"}
    assert table.groupby("group")["split"].nunique().max() == 1   # a lesion's images stay together
    assert ("/api/access/datafile/11", None) in server.requests
    assert spec.primary_metric == "accuracy"


def test_ham10000_unreachable_dataverse_gives_the_manual_step(server, tmp_path, raw_data):
    with pytest.raises(ManualDownloadError) as err:
        fetch("ham10000", tmp_path, {"dataverse_server": server.base + "/nothing", "raw_data": str(raw_data)})
    msg = str(err.value)
    assert "doi.org/10.7910/DVN/DBW86T" in msg and "'HAM10000_images_part_1.zip'" in msg
    assert str((raw_data / "ham10000").resolve()) in msg


# -- MedMNIST -------------------------------------------------------------------------------------
def medmnist_npz(rgb: bool = False, multilabel: bool = False, n=(20, 6, 8), classes: int = 2) -> bytes:
    rng = np.random.default_rng(3)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        shape = (count, 28, 28, 3) if rgb else (count, 28, 28)
        arrays[f"{split}_images"] = rng.integers(0, 255, size=shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (rng.integers(0, 2, size=(count, 14)) if multilabel else
                                     (np.arange(count) % classes).reshape(-1, 1)).astype(np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def test_medmnist_flag_download_official_split(server, tmp_path):
    data = medmnist_npz()
    url = server.add("/records/10519652/files/pneumoniamnist.npz", data)
    store = fetch_and_prepare("pneumoniamnist", tmp_path, {"url": url, "md5": md5(data)})
    assert store.classes == ["normal", "pneumonia"] and store.task == "binary"
    assert store.meta["counts"] == {"train": 20, "val": 6, "test": 8}   # official split kept, no carving
    assert store.images.shape == (34, 16, 16, 1)


def test_medmnist_official_md5_rejects_other_bytes(server, tmp_path):
    url = server.add("/chestmnist.npz", medmnist_npz(multilabel=True))
    with pytest.raises(ChecksumError, match=r"chestmnist\.npz.*02c8a6516a18b556561a56cbdd36c4a8"):
        fetch("chestmnist", tmp_path, {"url": url})
    assert not (tmp_path / "results" / "raw" / "chestmnist" / "downloads" / "chestmnist.npz").exists()


def test_medmnist_npz_adapter_infers_the_task(tmp_path):
    path = tmp_path / "my.npz"
    path.write_bytes(medmnist_npz(rgb=True, classes=4))
    store = fetch_and_prepare("medmnist_npz", tmp_path, {"path": str(path)})
    assert store.task == "multiclass" and store.classes == ["class_0", "class_1", "class_2", "class_3"]
    assert store.images.shape[-1] == 3
    path.write_bytes(medmnist_npz(multilabel=True))
    raw = DATASETS.get("medmnist_npz").read({"path": str(path)}, {})
    assert raw.task == "multilabel" and len(raw.classes) == 14


def test_medmnist_npz_wrong_layout_and_corrupt_file_are_named(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(LabelFileError, match=r"bad\.npz: not in the MedMNIST layout.*train_images"):
        DATASETS.get("medmnist_npz").read({"path": str(bad)}, {})
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(medmnist_npz()[:500])
    with pytest.raises(ArchiveError, match=r"corrupt\.npz: corrupt or not a \.npz"):
        DATASETS.get("medmnist_npz").read({"path": str(corrupt)}, {})


# -- the registry and its documentation -----------------------------------------------------------
# the dense sources (vindr_cxr, tbx11k, nih_cxr14_bbox, chexmask) are in test_dense_sources.py
STUDY_DATASETS = ["chexpert", "mura_shoulder", "mura_wrist", "mura_humerus", "brain_tumor_mri", "bach", "isic2020",
                  "cholect50", "chestxray14", "ham10000", "pneumoniamnist", "breastmnist",
                  "retinamnist", "dermamnist", "bloodmnist", "organamnist", "pathmnist", "chestmnist", "octmnist",
                  "tissuemnist", "organcmnist", "organsmnist", "medmnist_npz"]


def test_box_and_mask_sources_are_not_classification_datasets():
    from medtl.data import DENSE_DATASETS

    for name in ("vindr_cxr", "tbx11k", "nih_cxr14_bbox", "chexmask"):
        assert name in DENSE_DATASETS and name not in DATASETS and name not in SOURCES


@pytest.mark.parametrize("name", STUDY_DATASETS)
def test_every_source_is_registered_and_documented(name):
    spec, info = DATASETS.get(name), SOURCES[name]
    assert spec.description and spec.metrics and spec.primary_metric in spec.metrics
    assert spec.license or info.access == "local file"   # bring-your-own: the licence is that of your file
    assert info.page.startswith("https://") and info.split and info.license
    docs = (REPO / "docs" / "datasets.md").read_text()
    assert re.search(rf"`{name}`", docs), f"docs/datasets.md does not document {name}"


def test_manual_sources_take_the_configs_raw_data_folder():
    """rules/common.smk (fetch_entry) passes the config's raw_data to every source that declares the option."""
    for name, info in SOURCES.items():
        if "manual" in info.access:
            assert "raw_data" in DATASETS.get(name).options, name


# The first study reports each dataset with the two metrics of its table (Tables 3-10), the first being the
# main metric of Tables 11-12 (MURA-Shoulder's 4.7 % is (77.07 - 73.60) / 73.60, in accuracy).
FIRST_STUDY_METRICS = {
    "chexpert": ("map", "auroc"), "mura_shoulder": ("accuracy", "kappa"), "mura_wrist": ("accuracy", "kappa"),
    "mura_humerus": ("accuracy", "kappa"), "brain_tumor_mri": ("accuracy", "macro_f1"),
    "bach": ("accuracy", "kappa"), "isic2020": ("auroc", "accuracy"), "cholect50": ("map", "auroc"),
}


@pytest.mark.parametrize("name", sorted(FIRST_STUDY_METRICS))
def test_first_study_datasets_report_the_metric_pair_of_their_table(name):
    spec = DATASETS.get(name)
    assert tuple(spec.metrics) == FIRST_STUDY_METRICS[name]
    assert spec.primary_metric == FIRST_STUDY_METRICS[name][0]
