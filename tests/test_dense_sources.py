"""The dense sources of the second study, end to end on tiny archives built here in each source's own
layout: obtained (put by hand into the raw-data folder, or served over HTTP from 127.0.0.1),
verified, unpacked, read and prepared into a dense store. VinDr-CXR (DICOM, three radiologists
fused), TBX11K (VOC XML, official lists), NIH ChestX-ray14 boxes (malformed-header CSV, image
tarballs) and CheXmask (run-length-encoded lung and heart masks); plus the failures a user meets."""
from __future__ import annotations

import gzip
import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_server import serve
from dense_helpers import REPO, prepare_from
from medtl.data import DENSE_DATASETS
from medtl.data.adapters import LabelFileError
from medtl.data.download import ChecksumError
from medtl.data.sources import DENSE_SOURCES
from medtl.data.sources.boxes import fuse_readers, weighted_boxes_fusion
from medtl.data.sources.chexmask import decode_rle
from medtl.data.sources.common import ArchiveError, ManualDownloadError
from medtl.data.sources.vindr_cxr import KAGGLE_CLASSES
from medtl.settings import show
from medtl.workflow.config import ConfigError
from medtl.workflow.dense_config import check_dense_config

FAST = {"retries": 1, "backoff": 0.01}


# -- helpers --------------------------------------------------------------------------------------
def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def block_image(width: int, height: int, box, value=255, background=40, dtype=np.uint8) -> np.ndarray:
    """A dark image with one bright rectangle (x1, y1, x2, y2 in pixels)."""
    img = np.full((height, width), background, dtype)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = value
    return img


def dicom(pixels: np.ndarray, photometric: str = "MONOCHROME2") -> bytes:
    """A 12-bit DX DICOM file, as PhysioNet's VinDr-CXR ships them."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"   # Digital X-Ray Image, for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_files(root: Path, files: dict[str, bytes | str]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


def make_zip(path: Path, files: dict[str, bytes | str]) -> Path:
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def tar_gz(files: dict[str, bytes]) -> bytes:
    from test_sources import tar_gz_bytes

    return tar_gz_bytes(files)


def prepare(tmp_path: Path, task: str, kind: str, options: dict, size: int = 32, name: str = "d"):
    """fetch + read + prepare as the workflow runs them, downloads fast, raw_data in this test's folder."""
    options = {"raw_data": str(tmp_path / "archives"), **FAST, **options}
    return prepare_from(tmp_path, task, kind, options, size, name)


def store_boxes(store, image_id: str) -> pd.DataFrame:
    index = int(store.labels.loc[store.labels["image_id"] == image_id, "index"].iloc[0])
    return store.boxes[store.boxes["index"] == index].reset_index(drop=True)


def image_of(store, image_id: str) -> np.ndarray:
    index = int(store.labels.loc[store.labels["image_id"] == image_id, "index"].iloc[0])
    return store.images[index, ..., 0]


@pytest.fixture
def server():
    with serve() as state:
        yield state


# -- weighted boxes fusion ------------------------------------------------------------------------
def test_wbf_averages_the_readers_boxes_that_overlap_and_counts_the_readers():
    boxes = np.array([[10, 10, 50, 50],      # R1
                      [12, 10, 52, 50],      # R2: IoU with R1's 0.905 -> same finding
                      [100, 100, 120, 120],  # R2: elsewhere -> its own
                      [10, 14, 50, 54],      # R3: IoU with the fused (11, 10, 51, 50) 0.82 -> joins
                      [10, 10, 30, 50]])     # R3: IoU with the fused box 0.49 -> its own at 0.5
    fused, readers = weighted_boxes_fusion(boxes, ["R1", "R2", "R2", "R3", "R3"], iou_thr=0.5)
    np.testing.assert_allclose(fused, [[32 / 3 + 0.0, 34 / 3, 152 / 3, 154 / 3], [100, 100, 120, 120],
                                       [10, 10, 30, 50]], atol=1e-9)
    assert readers.tolist() == [3, 1, 1]
    fused, readers = weighted_boxes_fusion(boxes, ["R1", "R2", "R2", "R3", "R3"], iou_thr=0.4)
    assert len(fused) == 2 and readers.tolist() == [3, 1]   # at 0.4 the narrow box joins too


def test_fusion_is_per_image_and_class_and_keeps_min_readers():
    table = pd.DataFrame({"image_id": ["a", "a", "a", "b"], "class": ["Nodule/Mass", "Nodule/Mass", "ILD", "ILD"],
                          "x1": [0, 1, 0, 0], "y1": [0, 0, 0, 0], "x2": [10, 11, 10, 10], "y2": [10, 10, 10, 10],
                          "reader": ["R1", "R2", "R3", "R1"]})
    fused = fuse_readers(table, 0.5)
    assert fused[["image_id", "class", "readers"]].values.tolist() == [["a", "ILD", 1], ["a", "Nodule/Mass", 2],
                                                                       ["b", "ILD", 1]]
    assert fused.loc[1, "x1"] == 0.5 and fused.loc[1, "x2"] == 10.5
    assert fuse_readers(table, 0.5, min_readers=2)["class"].tolist() == ["Nodule/Mass"]
    # a chain: R1's box overlaps R2's, R2's overlaps R3's, R1's not R3's; which pair fuses depends on the
    # order boxes are taken in, which is the readers' order, whatever the file's row order
    chain = pd.DataFrame({"image_id": "c", "class": "ILD", "x1": [0, 3, 6], "y1": 0, "x2": [10, 13, 16], "y2": 10,
                          "reader": ["R1", "R2", "R3"]})
    fused = fuse_readers(chain, 0.5)
    assert fused[["x1", "x2", "readers"]].values.tolist() == [[1.5, 11.5, 2], [6, 16, 1]]
    pd.testing.assert_frame_equal(fuse_readers(chain.iloc[::-1], 0.5), fused)


# -- VinDr-CXR ------------------------------------------------------------------------------------
VINDR_COLUMNS = "image_id,rad_id,class_name,x_min,y_min,x_max,y_max\n"
A, B, C, D, E = ("9a5094b2563a1ef3ff50dc5c7ff71345", "000434271f63a053c4128a0ba6352c7f",
                 "0005e8e3701dfb1dd93d53e2ff537b6e", "001d127bad87592efe45a5c7678f8b8d",
                 "00150343289f317a0ad5629d5b7d9ef9")
T1, T2 = "002a34c58c5b758217ed1f584ccbcfe9", "004f33259ee4aef671c2b95d54e4be68"


def vindr_files(top: str = "vindr-cxr-1.0.0/") -> dict[str, bytes | str]:
    """5 training images (3 radiologists each) and 2 test images (consensus), 200 x 100 px DICOMs."""
    heart = (100, 40, 140, 60)
    train = VINDR_COLUMNS + "".join([
        # A: three radiologists outline the same bright block, a little apart; R9 adds a lone aortic box,
        # R10 a rib fracture (not one of the 14 competition findings)
        f"{A},R8,Cardiomegaly,98,40,138,60\n", f"{A},R9,Cardiomegaly,102,40,142,60\n",
        f"{A},R10,Cardiomegaly,100,38,140,62\n", f"{A},R9,Aortic enlargement,10,10,30,30\n",
        f"{A},R10,Rib fracture,150,70,170,80\n",
        f"{B},R8,No finding,,,,\n", f"{B},R9,No finding,,,,\n", f"{B},R10,No finding,,,,\n",
        # C: MONOCHROME1; D: one reader saw a nodule the other two did not; E: nothing
        f"{C},R8,Nodule/Mass,20,20,40,40\n", f"{C},R9,Nodule/Mass,21,20,41,40\n", f"{C},R10,No finding,,,,\n",
        f"{D},R8,Nodule/Mass,60,60,70,70\n", f"{D},R9,No finding,,,,\n", f"{D},R10,No finding,,,,\n",
        f"{E},R8,No finding,,,,\n", f"{E},R9,No finding,,,,\n", f"{E},R10,No finding,,,,\n"])
    # the test set is a consensus: two boxes of one class that overlap stay two boxes
    test = VINDR_COLUMNS + (f"{T1},R11,Pleural effusion,0,50,60,100\n{T1},R11,Pleural effusion,10,50,70,100\n"
                            f"{T2},R11,No finding,,,,\n")
    files: dict[str, bytes | str] = {
        f"{top}annotations/annotations_train.csv": train, f"{top}annotations/annotations_test.csv": test,
        f"{top}annotations/image_labels_train.csv": "image_id,rad_id,Aortic enlargement\n",
    }
    for image_id, split in [(A, "train"), (B, "train"), (C, "train"), (D, "train"), (E, "train"), (T1, "test"),
                            (T2, "test")]:
        pixels = block_image(200, 100, heart, value=3000, background=500, dtype=np.uint16)
        files[f"{top}{split}/{image_id}.dicom"] = dicom(pixels, "MONOCHROME1" if image_id == C else "MONOCHROME2")
    return files


def test_vindr_cxr_from_the_manual_archive_three_radiologists_fused(tmp_path):
    make_zip(tmp_path / "archives" / "vindr_cxr" / "vindr-cxr-1.0.0.zip", vindr_files())
    store = prepare(tmp_path, "detection", "vindr_cxr", {}, size=40)
    assert store.classes == KAGGLE_CLASSES and store.images.shape == (7, 40, 40, 1)
    assert store.meta["counts"]["test"] == 2 and store.meta["counts"]["val"] >= 1
    # 200 x 100 -> 40 x 20, padded by 10 on top: x * 0.2, y * 0.2 + 10
    a = store_boxes(store, A)
    assert a["class"].tolist() == ["Aortic enlargement", "Cardiomegaly"]   # the rib fracture is not a class
    # the three radiologists' boxes averaged: (100, 39.33, 140, 60.67)
    np.testing.assert_allclose(a.loc[1, ["x1", "y1", "x2", "y2"]].to_numpy(float), [20.0, 17.87, 28.0, 22.13],
                               atol=0.01)
    block = image_of(store, A)[18:22, 21:27]
    assert block.min() > 200 and image_of(store, A)[13, 5] < 60   # the block is bright, the rest dark
    assert image_of(store, C)[13, 5] > 200 and image_of(store, C)[19, 24] < 60   # MONOCHROME1 inverted
    assert len(store_boxes(store, C)) == 1 and len(store_boxes(store, D)) == 1 and store_boxes(store, B).empty
    assert len(store_boxes(store, T1)) == 2   # the test consensus is not fused
    assert store.labels.set_index("image_id").loc[B, store.classes].sum() == 0   # a negative is kept


def test_vindr_cxr_options_classes_readers_negatives_and_unpacked_folder(tmp_path):
    write_files(tmp_path / "archives" / "vindr_cxr", vindr_files(top="physionet.org/files/vindr-cxr/1.0.0/"))
    spec = DENSE_DATASETS.get("vindr_cxr")
    manifest = spec.fetch(tmp_path / "res", {**spec.options, "raw_data": str(tmp_path / "archives")})
    assert not (tmp_path / "res" / "extracted").exists()   # used in place
    read = spec.reader("detection")
    raw = read(manifest, {**spec.options, "classes": "all", "min_readers": 2, "negatives": False})
    assert "Rib fracture" in raw.classes and "Pleural effusion" in raw.classes
    ids = list(raw.table["image_id"])
    assert sorted(raw.boxes["class"].tolist()) == ["Cardiomegaly", "Nodule/Mass", "Pleural effusion",
                                                   "Pleural effusion"]   # single-reader boxes dropped
    assert B not in ids and E not in ids and T2 not in ids
    with pytest.raises(ValueError, match=r"names \['Lung cyst'\], which the annotations do not have"):
        read(manifest, {**spec.options, "classes": ["Cardiomegaly", "Lung cyst"]})
    assert len(read(manifest, {**spec.options, "limit": 3}).table) == 3


def test_vindr_cxr_without_the_files_names_the_page_the_files_and_the_folder(tmp_path):
    with pytest.raises(ManualDownloadError) as err:
        prepare(tmp_path, "detection", "vindr_cxr", {})
    msg = str(err.value)
    assert "https://physionet.org/content/vindr-cxr/1.0.0/" in msg and "'vindr-cxr-1.0.0.zip'" in msg
    assert "annotations/annotations_train.csv" in msg and "train/ and test/" in msg and "'root'" in msg
    assert str((tmp_path / "archives" / "vindr_cxr").resolve()) in msg


def test_vindr_cxr_missing_and_broken_dicom_are_named(tmp_path):
    files = vindr_files()
    del files[f"vindr-cxr-1.0.0/train/{D}.dicom"]
    make_zip(tmp_path / "archives" / "vindr_cxr" / "vindr-cxr-1.0.0.zip", files)
    with pytest.raises(ArchiveError, match=rf"1 image\(s\) listed in .* are missing, e.g. .*{D}\.dicom"):
        prepare(tmp_path, "detection", "vindr_cxr", {})
    files[f"vindr-cxr-1.0.0/train/{D}.dicom"] = b"DICM but not really"
    make_zip(tmp_path / "raw2" / "vindr_cxr" / "vindr-cxr-1.0.0.zip", files)
    with pytest.raises(Exception, match=rf"{D}\.dicom: cannot read DICOM"):
        prepare(tmp_path / "b", "detection", "vindr_cxr", {"raw_data": str(tmp_path / "raw2")})


# -- TBX11K ---------------------------------------------------------------------------------------
VOC = ("<annotation><folder>tb</folder><filename>{name}</filename>"
       "<size><width>64</width><height>64</height><depth>3</depth></size>{objects}</annotation>")
OBJ = ("<object><name>{cls}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
       "</bndbox></object>")


def tbx11k_files(broken_xml: bool = False) -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {}
    names = {"train": ["tb/tb0003.png", "tb/tb0005.png", "health/h0001.png", "health/h0002.png", "sick/s0002.png"],
             "val": ["tb/tb0004.png", "sick/s0001.png"]}
    for rel in names["train"] + names["val"]:
        files[f"TBX11K/imgs/{rel}"] = png(block_image(64, 64, (8, 8, 24, 40)) if rel.startswith("tb") else
                                          block_image(64, 64, (0, 0, 1, 1)))
    files["TBX11K/imgs/tb/tb0005.png"] = png(block_image(128, 128, (16, 16, 48, 80)))   # a resized copy
    two = OBJ.format(cls="ActiveTuberculosis", x1=8, y1=8, x2=24, y2=40) + \
        OBJ.format(cls="ObsoletePulmonaryTuberculosis", x1=40, y1=10, x2=56, y2=20)
    files["TBX11K/annotations/xml/tb0003.xml"] = VOC.format(name="tb0003.png", objects=two)
    files["TBX11K/annotations/xml/tb0005.xml"] = VOC.format(name="tb0005.png", objects=OBJ.format(
        cls="PulmonaryTuberculosis", x1=8, y1=8, x2=24, y2=40))
    files["TBX11K/annotations/xml/tb0004.xml"] = "<annotation><object>" if broken_xml else VOC.format(
        name="tb0004.png", objects=OBJ.format(cls="ActiveTuberculosis", x1=8, y1=8, x2=24, y2=40))
    files["TBX11K/annotations/json/TBX11K_train.json"] = "{}"
    files["TBX11K/lists/TBX11K_train.txt"] = "\n".join(names["train"]) + "\n"
    files["TBX11K/lists/TBX11K_val.txt"] = "\n".join(names["val"]) + "\n"
    return files


def test_tbx11k_official_lists_voc_boxes_val_list_is_test(tmp_path):
    make_zip(tmp_path / "archives" / "tbx11k" / "TBX11K.zip", tbx11k_files())
    store = prepare(tmp_path, "detection", "tbx11k", {}, size=32)
    assert store.classes == ["ActiveTuberculosis", "ObsoletePulmonaryTuberculosis", "PulmonaryTuberculosis"]
    assert store.meta["counts"]["test"] == 2 and store.meta["counts"]["train"] + store.meta["counts"]["val"] == 5
    assert set(store.labels.loc[store.labels["split"] == "test", "image_id"]) == {"tb/tb0004.png", "sick/s0001.png"}
    tb = store_boxes(store, "tb/tb0003.png")
    assert tb["class"].tolist() == ["ActiveTuberculosis", "ObsoletePulmonaryTuberculosis"]
    assert tb.loc[0, ["x1", "y1", "x2", "y2"]].tolist() == [4.0, 4.0, 12.0, 20.0]   # 64 -> 32 px
    assert image_of(store, "tb/tb0003.png")[5:19, 5:11].min() > 200
    assert store_boxes(store, "tb/tb0005.png")[["x1", "y1", "x2", "y2"]].values.tolist() == [[4, 4, 12, 20]]
    assert image_of(store, "tb/tb0005.png")[5:19, 5:11].min() > 200   # boxes in the XML's <size>, not the file's
    assert store_boxes(store, "health/h0001.png").empty
    assert store.meta["box_counts"] == {"ActiveTuberculosis": 2, "ObsoletePulmonaryTuberculosis": 1,
                                        "PulmonaryTuberculosis": 1}
    assert not list((tmp_path / "raw" / "extracted").rglob("*.json"))   # the COCO copy is not unpacked


def test_tbx11k_malformed_xml_and_missing_archive_are_named(tmp_path):
    make_zip(tmp_path / "archives" / "tbx11k" / "TBX11K.zip", tbx11k_files(broken_xml=True))
    with pytest.raises(LabelFileError, match=r"tb0004\.xml: malformed annotation XML"):
        prepare(tmp_path, "detection", "tbx11k", {})
    with pytest.raises(ManualDownloadError) as err:
        prepare(tmp_path / "b", "detection", "tbx11k", {"raw_data": str(tmp_path / "none")})
    assert "https://mmcheng.net/tb/" in str(err.value) and "'TBX11K.zip'" in str(err.value)
    assert str((tmp_path / "none" / "tbx11k").resolve()) in str(err.value)


# -- NIH ChestX-ray14 boxes -----------------------------------------------------------------------
# the real file's header: the box header spans the four coordinate columns, then two empty ones
NIH_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"


def nih_files(raw: Path) -> dict[str, bytes]:
    """BBox_List_2017.csv put by hand, and two image tarballs (with images that have no box)."""
    rows = ["00000003_000.png,Atelectasis,256,512,128,256",   # 64 px copies: the block at (16, 32)-(24, 48)
            "00000003_000.png,Nodule,512.5,100,64,64",
            "00000005_001.png,Infiltrate,0,0,1024,1024"]
    follow_ups = [f"{10 + i // 2:08d}_{i % 2:03d}.png" for i in range(10)]   # 5 patients, 2 images each
    rows += [f"{n},Effusion,100,100,300,300" for n in follow_ups]
    (raw / "chestxray14").mkdir(parents=True, exist_ok=True)
    (raw / "chestxray14" / "BBox_List_2017.csv").write_text(NIH_HEADER + "\n".join(rows) + "\n")
    names = ["00000003_000.png", "00000005_001.png", *follow_ups]
    img = png(block_image(64, 64, (16, 32, 24, 48)))
    tars = {"images_001.tar.gz": {f"images/{n}": img for n in names[:6]},
            "images_002.tar.gz": {f"images/{n}": img for n in names[6:]}}
    tars["images_001.tar.gz"]["images/00000001_000.png"] = img   # no box: not unpacked
    return {name: tar_gz(members) for name, members in tars.items()}


def test_nih_boxes_from_the_box_file_and_the_tarballs_patient_wise(server, tmp_path):
    tars = nih_files(tmp_path / "archives")
    urls = {name: server.add(f"/shared/static/{name}", data) for name, data in tars.items()}
    checksums = {name: "md5:" + hashlib.md5(data).hexdigest() for name, data in tars.items()}
    options = {"urls": urls, "checksums": checksums, "image_archives": [1, 2], "test_fraction": 0.3}
    store = prepare(tmp_path, "detection", "nih_cxr14_bbox", options, size=32)
    assert store.classes == ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia",
                             "Pneumothorax"]
    assert len(store.labels) == 12 and len(store.boxes) == 13
    boxes = store_boxes(store, "00000003_000.png")[["x1", "y1", "x2", "y2"]].to_numpy(float)
    np.testing.assert_allclose(boxes, [[8, 16, 12, 24], [16.02, 3.12, 18.02, 5.12]], atol=0.011)  # 1024 px -> 64
    assert image_of(store, "00000003_000.png")[17:23, 9:11].min() > 200
    assert set(store.labels["group"]) == {"00000003", "00000005", *(f"{p:08d}" for p in range(10, 15))}
    assert store.meta["counts"]["test"] >= 1 and store.labels.groupby("group")["split"].nunique().max() == 1
    extracted = tmp_path / "raw" / "extracted"
    assert not list(extracted.rglob("00000001_000.png")) and len(list(extracted.rglob("*.png"))) == 12


def test_nih_boxes_missing_box_file_fails_before_any_download(server, tmp_path):
    tars = nih_files(tmp_path / "archives")
    (tmp_path / "archives" / "chestxray14" / "BBox_List_2017.csv").unlink()
    urls = {name: server.add(f"/s/{name}", data) for name, data in tars.items()}
    with pytest.raises(ManualDownloadError) as err:
        prepare(tmp_path, "detection", "nih_cxr14_bbox", {"urls": urls, "image_archives": [1, 2]})
    msg = str(err.value)
    assert "'BBox_List_2017.csv'" in msg and "https://nihcc.app.box.com/v/ChestXray-NIHCC" in msg
    assert str((tmp_path / "archives" / "chestxray14").resolve()) in msg
    assert server.requests == []


def test_nih_boxes_wrong_checksum_and_malformed_box_file_are_named(server, tmp_path):
    tars = nih_files(tmp_path / "archives")
    urls = {name: server.add(f"/s/{name}", data) for name, data in tars.items()}
    with pytest.raises(ChecksumError, match=r"images_001\.tar\.gz"):
        prepare(tmp_path, "detection", "nih_cxr14_bbox", {"urls": urls, "image_archives": [1]})  # NIH's own MD5
    csv = tmp_path / "archives" / "chestxray14" / "BBox_List_2017.csv"
    csv.write_text(csv.read_text().replace("Nodule,512.5", "Nodule,5l2.5"))
    with pytest.raises(LabelFileError, match=r"BBox_List_2017\.csv: data row 2 \(00000003_000\.png\)"):
        prepare(tmp_path / "b", "detection", "nih_cxr14_bbox", {"urls": urls, "verify": False, "image_archives": [1],
                                                                "raw_data": str(tmp_path / "archives")})


# -- CheXmask -------------------------------------------------------------------------------------
def rle(mask: np.ndarray) -> str:
    """CheXmask's encoding (its get_RLE_from_mask): 1-based (start, length) runs, row by row."""
    pixels = np.concatenate([[0], mask.astype(np.uint8).ravel(), [0]])
    runs = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def test_rle_decodes_row_by_row_from_one():
    assert decode_rle("2 2 6 1", 2, 3).tolist() == [[0, 1, 1], [0, 0, 1]]
    mask = np.zeros((5, 7), bool)
    mask[1:4, 2:6] = True
    assert np.array_equal(decode_rle(rle(mask), 5, 7), mask)
    with pytest.raises(LabelFileError, match="runs outside its 2 x 3 pixels"):
        decode_rle("5 3", 2, 3, "x")


def chexmask_table(dice=(0.9, 0.9, 0.9, 0.5, 0.9, 0.9, 0.9)) -> str:
    """VinDr-CXR.csv: heart = the bright block of vindr_files' images, lungs beside it; 200 x 100 px."""
    heart = np.zeros((100, 200), bool)
    heart[40:60, 100:140] = True
    left, right = np.zeros_like(heart), np.zeros_like(heart)
    left[10:90, 150:190], right[10:90, 10:90] = True, True
    rows = []
    for image_id, q in zip([A, B, C, D, E, T1, T2], dice):
        rows.append({"image_id": image_id, "Dice RCA (Mean)": q, "Dice RCA (Max)": q, "Landmarks": "[[1, 2]]",
                     "Left Lung": rle(left), "Right Lung": "" if image_id == E else rle(right), "Heart": rle(heart),
                     "Height": 100, "Width": 200})
    return pd.DataFrame(rows).to_csv(index=False)


def test_chexmask_masks_of_vindr_cxr_downloaded_against_physionet_sha256(server, tmp_path):
    write_files(tmp_path / "archives" / "vindr_cxr", vindr_files())
    table = gzip.compress(chexmask_table().encode())
    digest = hashlib.sha256(table).hexdigest()
    base = "/files/chexmask-cxr-segmentation-data/1.0.0/"
    server.add(base + "OriginalResolution/VinDr-CXR.csv.gz", table)
    server.add(base + "SHA256SUMS.txt", (f"{'0' * 64} OriginalResolution/ChestX-Ray8.csv.gz\n"
                                         f"{digest} OriginalResolution/VinDr-CXR.csv.gz\n").encode())
    store = prepare(tmp_path, "segmentation", "chexmask", {"base_url": server.url(base)}, size=40)
    assert store.classes == ["heart", "left_lung", "right_lung"]
    assert len(store.labels) == 6 and D not in set(store.labels["image_id"])   # Dice RCA 0.5 < 0.7: left out
    assert set(store.labels.loc[store.labels["split"] == "test", "image_id"]) == {T1, T2}
    index = int(store.labels.loc[store.labels["image_id"] == A, "index"].iloc[0])
    heart = store.masks[index, 0]   # 200 x 100 -> 40 x 20, 10 px of padding on top
    assert heart[18:22, 20:28].all() and heart.sum() == 8 * 4
    assert (heart.astype(bool) == (image_of(store, A) > 127)).all()   # aligned with the image
    e = store.labels.set_index("image_id").loc[E]
    assert e["right_lung"] == 0 and e["left_lung"] == 1   # an empty mask is "not annotated"
    assert (tmp_path / "raw" / "downloads" / "VinDr-CXR.csv.gz").exists()


def test_chexmask_checksum_mismatch_and_unreachable_list(server, tmp_path):
    write_files(tmp_path / "archives" / "vindr_cxr", vindr_files())
    base = "/files/chexmask/1.0.0/"
    server.add(base + "OriginalResolution/VinDr-CXR.csv", chexmask_table().encode())
    server.add(base + "SHA256SUMS.txt", f"{'ab' * 32} OriginalResolution/VinDr-CXR.csv\n".encode())
    with pytest.raises(ChecksumError, match=r"VinDr-CXR\.csv"):
        prepare(tmp_path, "segmentation", "chexmask", {"base_url": server.url(base)})
    assert not (tmp_path / "raw" / "downloads" / "VinDr-CXR.csv").exists()
    with pytest.raises(ManualDownloadError) as err:
        prepare(tmp_path / "b", "segmentation", "chexmask", {"base_url": server.url("/nothing/"),
                                                             "raw_data": str(tmp_path / "archives")})
    msg = str(err.value)
    assert "https://physionet.org/content/chexmask-cxr-segmentation-data/1.0.0/" in msg
    assert "OriginalResolution/VinDr-CXR.csv" in msg and str((tmp_path / "archives" / "chexmask").resolve()) in msg


def test_chexmask_table_put_by_hand_with_chestxray14_images(tmp_path):
    """ChestX-ray14's masks, the CSV in <raw_data>/chexmask/, PNGs named by patient; NIH's test list."""
    names = [f"{p:08d}_00{k}.png" for p in range(1, 7) for k in range(2)]
    mask = np.zeros((64, 64), bool)
    mask[8:40, 4:30] = True
    rows = [{"Image Index": n, "Dice RCA (Mean)": 0.8, "Left Lung": rle(mask), "Right Lung": rle(mask[:, ::-1]),
             "Heart": rle(mask[::-1]), "Height": 64, "Width": 64} for n in names]
    (tmp_path / "archives" / "chexmask").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(tmp_path / "archives" / "chexmask" / "ChestX-Ray8.csv", index=False)
    write_files(tmp_path / "nih" / "images", {n: png(block_image(64, 64, (4, 8, 30, 40))) for n in names})
    (tmp_path / "test_list.txt").write_text("00000005_000.png\n00000005_001.png\n00000006_000.png\n00000006_001.png\n")
    store = prepare(tmp_path, "segmentation", "chexmask", {"images": "chestxray14", "image_root": str(tmp_path / "nih"),
                                                           "test_list": str(tmp_path / "test_list.txt")}, size=32)
    assert len(store.labels) == 12 and store.meta["counts"]["test"] == 4
    assert store.labels.groupby("group")["split"].nunique().max() == 1
    assert store.masks[:, 1, 4:20, 2:15].all() and store.masks[:, 1].sum() == 12 * 16 * 13
    with pytest.raises(ValueError, match="needs the option 'image_root'"):
        prepare(tmp_path / "b", "segmentation", "chexmask", {"images": "chestxray14",
                                                             "raw_data": str(tmp_path / "archives")})


# -- the registry and its documentation -----------------------------------------------------------
DENSE_STUDY_DATASETS = {"vindr_cxr": ("detection",), "tbx11k": ("detection",), "nih_cxr14_bbox": ("detection",),
                        "chexmask": ("segmentation",)}


@pytest.mark.parametrize("name", sorted(DENSE_STUDY_DATASETS))
def test_every_dense_source_is_registered_and_documented(name):
    spec, info = DENSE_DATASETS.get(name), DENSE_SOURCES[name]
    assert spec.tasks == DENSE_STUDY_DATASETS[name] and info.task in spec.tasks
    assert spec.description and spec.license and info.license and info.split and info.page.startswith("https://")
    assert "raw_data" in spec.options   # rules/common_dense.smk passes the config's raw_data folder
    docs = (REPO / "docs" / "datasets.md").read_text()
    assert re.search(rf"### `{name}`", docs), f"docs/datasets.md does not document {name}"
    assert f"`{name}`" in (REPO / "docs" / "dense.md").read_text(), f"docs/dense.md does not list {name}"


# -- the config check of each source's options -----------------------------------------------------
def dense_config_errors(task: str, kind: str, options: dict) -> str:
    with pytest.raises(ConfigError) as err:
        check_dense_config({task: {"datasets": {"mine": {"type": kind, "options": options}}}})
    return str(err.value)


@pytest.mark.parametrize("kind, task, typo, right, wrong, allowed", [
    ("vindr_cxr", "detection", "fusion_iuo", "fusion_iou", {"fusion_iou": "0.4"}, "expected a number >= 0 and <= 1"),
    ("vindr_cxr", "detection", "min_reader", "min_readers", {"negatives": "no"}, "expected true or false"),
    ("vindr_cxr", "detection", "clases", "classes", {"classes": "Cardiomegaly"},
     "expected a list of strings or 'kaggle' or 'all'"),
    ("tbx11k", "detection", "list", "lists", {"lists": "TBX11K_val.txt"}, "expected a mapping of a string"),
    ("tbx11k", "detection", "limits", "limit", {"limit": "10"}, "expected an integer >= 1 or null"),
    ("nih_cxr14_bbox", "detection", "roots", "root", {"test_fraction": "0.3"}, "expected a number > 0 and < 1"),
    ("nih_cxr14_bbox", "detection", "image_archive", "image_archives", {"image_archives": [0, 13]},
     "expected a list of integers >= 1 and <= 12"),
    ("chexmask", "segmentation", "min_dice", "min_dice_rca", {"min_dice_rca": "high"},
     "expected a number >= 0 and <= 1"),
    ("chexmask", "segmentation", "image_roots", "image_root", {"images": "nih"},
     "expected one of 'vindr_cxr', 'chestxray14'"),
], ids=["vindr_cxr-fusion_iou", "vindr_cxr-negatives", "vindr_cxr-classes", "tbx11k-lists", "tbx11k-limit",
        "nih_cxr14_bbox-test_fraction", "nih_cxr14_bbox-image_archives", "chexmask-min_dice_rca", "chexmask-images"])
def test_a_misspelled_or_mistyped_source_option_stops_the_config_check(kind, task, typo, right, wrong, allowed):
    """Each source declares every option it reads: a typo is named with the key path and the option
    meant (it used to be accepted and ignored), a value of the wrong type with what is allowed."""
    message = dense_config_errors(task, kind, {typo: 1})
    assert f"{task}.datasets.mine.options.{typo}: unknown setting (did you mean '{right}'?)" in message
    [(key, value)] = wrong.items()
    message = dense_config_errors(task, kind, wrong)
    assert f"{task}.datasets.mine.options.{key}: {show(value)} is not allowed; {allowed}" in message


@pytest.mark.parametrize("kind, task, options", [
    ("vindr_cxr", "detection", {"classes": "all", "fusion_iou": 0.4, "min_readers": 2, "negatives": False,
                                "test_fraction": 0.1, "limit": 3, "root": "/data/vindr-cxr"}),
    ("vindr_cxr", "detection", {"classes": ["Cardiomegaly", "Nodule/Mass"], "archive": "/data/vindr-cxr-1.0.0.zip"}),
    ("tbx11k", "detection", {"lists": {"test": "TBX11K_test.txt"}, "classes": ["ActiveTuberculosis"], "limit": 5,
                             "archive": "/data/TBX11K.zip"}),
    ("nih_cxr14_bbox", "detection", {"root": "/data/nih", "images": "thumb256/images", "image_archives": [1, 2],
                                     "test_fraction": 0.3, "limit": 10, "urls": {"images_001.tar.gz": "http://x/1"},
                                     "checksums": {"images_001.tar.gz": "md5:0"}, "verify": False}),
    ("chexmask", "segmentation", {"images": "chestxray14", "csv": "/data/ChestX-Ray8.csv", "image_root": "/data/nih",
                                  "test_list": "/data/test_list.txt", "test_fraction": 0.3, "id_column": "Image Index",
                                  "min_dice_rca": 0, "resolution": "OriginalResolution", "base_url": "http://x/",
                                  "limit": 4, "retries": 1, "backoff": 0.01, "raw_data": "/data/archives"}),
], ids=["vindr_cxr", "vindr_cxr-class-list", "tbx11k", "nih_cxr14_bbox", "chexmask"])
def test_the_options_a_source_reads_pass_the_config_check(kind, task, options):
    check_dense_config({task: {"datasets": {"mine": {"type": kind, "options": options}}}})


# -- the workflow ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_nih_boxes_config_runs_through_the_workflow(server, tmp_path):
    """``detection.datasets.<name>: {type: nih_cxr14_bbox}``: a dry run schedules its fetch, prepare, YOLO
    export, training and report; then the fetch (the box file from the config's raw_data folder, the
    tarballs downloaded and checked) and the prepare job run for real."""
    from medtl.data.dense_store import load_dense_store
    from workflow_helpers import scheduled_jobs, snakemake, tiny_config, write_config

    tars = nih_files(tmp_path / "archives")
    urls = {name: server.add(f"/shared/static/{name}", data) for name, data in tars.items()}
    checksums = {name: "md5:" + hashlib.md5(data).hexdigest() for name, data in tars.items()}
    detection = {"datasets": {"nih": {"type": "nih_cxr14_bbox", "size": 32, "options": {
                     "urls": urls, "checksums": checksums, "image_archives": [1, 2], "test_fraction": 0.3}}},
                 "models": {"yolo": {"type": "yolo", "cfg": "yolov8n.yaml"}}, "strategies": {"ft": {}},
                 "training": {"epochs": 1, "batch_size": 4, "workers": 0}}
    config = write_config(tmp_path / "config.yaml", tiny_config(raw_data=str(tmp_path / "archives"),
                                                                detection=detection))
    jobs = [(rule, w) for rule, w in scheduled_jobs(tmp_path, config) if "nih" in w or rule == "report_detection"]
    assert sorted(rule for rule, _ in jobs) == ["export_yolo_dataset", "fetch_dense_dataset",
                                               "prepare_detection_dataset", "report_detection", "train_detection"]
    snakemake(tmp_path, config, "results/detection/prepared/nih/s32/meta.json")
    store = load_dense_store(tmp_path / "results" / "detection" / "prepared" / "nih" / "s32", task="detection")
    assert len(store.labels) == 12 and len(store.boxes) == 13 and store.classes[0] == "Atelectasis"
    assert len(list((tmp_path / "results" / "detection" / "raw" / "nih" / "extracted").rglob("*.png"))) == 12
