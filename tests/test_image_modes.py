"""Images an 8-bit store cannot hold as they are (issue 22): 16-bit, 32-bit and float samples are scaled to
8 bits by the declared ``intensity`` rule, never clipped to white; transparency is composited on the
declared ``background``, never dropped. One reader (medtl.data.imageio.open_image) serves the
classification and the dense prepare steps. Every fixture is written by PIL's own writer."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtl.data import DATASETS, DENSE_DATASETS
from medtl.data import imageio
from medtl.data.dense_prepare import Letterbox, letterbox_image, letterbox_mask
from medtl.data.imageio import decode_resize_crop, open_image, open_mask
from medtl.data.options import IMAGE, declared_options, image_options
from medtl.data.prepare import prepare
from medtl.data.store import StoreError
from medtl.io import write_json

SIZE = (24, 20)  # width, height


def gradient16(seed: int = 0) -> np.ndarray:
    """uint16 (20, 24) values spread over the whole 16-bit range, most of them above 255."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 65536, size=(SIZE[1], SIZE[0]), dtype=np.uint16)


def expected8(values: np.ndarray) -> np.ndarray:
    return np.round(values.astype(np.float64) * 255 / 65535)


def save16(path, values: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode in ("I;16", "I"), f"PIL read a {img.mode} image back, not a 16-bit one"
    return path


def rgba_fixture(path):
    """Red everywhere; pixel (0, 0) fully transparent (its hidden colour is red), (0, 1) half, the rest opaque."""
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 0] = 255
    arr[..., 3] = 255
    arr[0, 0, 3] = 0
    arr[0, 1, 3] = 128
    Image.fromarray(arr).save(path)
    with Image.open(path) as img:
        assert img.mode == "RGBA"
    return path


# -- the reader ---------------------------------------------------------------------------------------------
def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    values = gradient16()
    path = save16(tmp_path / "x16.png", values)
    assert (values > 255).mean() > 0.9
    grey = np.asarray(open_image(path, "L"), dtype=np.float64)
    assert not (grey[values > 255] == 255).all(), "values above 255 were clipped to white"
    assert np.abs(grey - expected8(values)).max() <= 1
    rgb = np.asarray(open_image(path, "RGB"), dtype=np.float64)
    assert rgb.shape == (*values.shape, 3) and np.abs(rgb - expected8(values)[..., None]).max() <= 1


def test_the_other_intensity_rules(tmp_path):
    values = np.full((SIZE[1], SIZE[0]), 1000, np.uint16)
    values[:, 12:] = 3000
    values[0, 0], values[0, 1] = 500, 9000  # one dark and one bright outlier
    path = save16(tmp_path / "x16.png", values)
    minmax = np.asarray(open_image(path, "L", "minmax"))  # the image's own 500..9000 spans 0-255
    assert minmax[0, 0] == 0 and minmax[0, 1] == 255 and minmax[5, 0] == round(500 * 255 / 8500)
    # the percentile rule ignores the outliers: the two plateaus span the whole 8-bit range, beyond is clipped
    pct = np.asarray(open_image(path, "L", "percentile"))
    assert pct[5, 0] == 0 and pct[5, 20] == 255 and pct[0, 0] == 0 and pct[0, 1] == 255


def test_32bit_and_float_images(tmp_path):
    values = gradient16().astype(np.int32)
    Image.fromarray(values).save(tmp_path / "x32.tif")
    with Image.open(tmp_path / "x32.tif") as img:
        assert img.mode == "I"
    # PIL writes it as signed 32-bit (SampleFormat 2): that range, -2**31..2**31-1, maps onto 0-255
    grey = np.asarray(open_image(tmp_path / "x32.tif", "L"), dtype=np.float64)
    assert np.abs(grey - np.round((values + 2.0 ** 31) / (2.0 ** 32 - 1) * 255)).max() <= 1
    assert np.asarray(open_image(tmp_path / "x32.tif", "L", "minmax")).max() == 255

    Image.fromarray(values.astype(np.float32) / 65535).save(tmp_path / "unit.tif")
    grey = np.asarray(open_image(tmp_path / "unit.tif", "L"), dtype=np.float64)  # float: 0..1 is the range
    assert np.abs(grey - expected8(values)).max() <= 1
    Image.fromarray(values.astype(np.float32)).save(tmp_path / "big.tif")
    with pytest.raises(StoreError, match=r"big.tif: pixel values .* lie outside 0..1.*intensity: minmax"):
        open_image(tmp_path / "big.tif", "L")
    nan = values.astype(np.float32) / 65535
    nan[3, 3] = np.nan
    Image.fromarray(nan).save(tmp_path / "nan.tif")
    with pytest.raises(StoreError, match="NaN"):
        open_image(tmp_path / "nan.tif", "L", "minmax")


def test_rgba_is_composited_on_the_background(tmp_path):
    path = rgba_fixture(tmp_path / "rgba.png")
    rgb = np.asarray(open_image(path, "RGB"))
    assert rgb[0, 0].tolist() == [0, 0, 0], "the red hidden under a transparent pixel came through"
    assert rgb[0, 1].tolist() == [128, 0, 0] and rgb[1, 1].tolist() == [255, 0, 0]
    white = np.asarray(open_image(path, "RGB", background="white"))
    assert white[0, 0].tolist() == [255, 255, 255] and white[0, 1].tolist() == [255, 127, 127]
    assert np.asarray(open_image(path, "L"))[0, 0] == 0
    assert np.asarray(open_image(path, "L", background=200))[0, 0] == 200


def test_la_and_palette_transparency_are_composited(tmp_path):
    la = np.full((4, 4, 2), 255, np.uint8)
    la[0, 0, 1] = 0
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert np.asarray(open_image(tmp_path / "la.png", "L"))[0, 0] == 0
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)  # index 0 red, index 1 green
    pal.putpixel((0, 0), 0)
    pal.save(tmp_path / "p.png", transparency=0)
    with Image.open(tmp_path / "p.png") as img:
        assert img.mode == "P" and img.info.get("transparency") == 0
    rgb = np.asarray(open_image(tmp_path / "p.png", "RGB"))
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[1, 1].tolist() == [0, 255, 0]


def test_eight_bit_opaque_images_are_read_as_before(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, size=(SIZE[1], SIZE[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "rgb.png")
    assert np.array_equal(np.asarray(open_image(tmp_path / "rgb.png", "RGB")), arr)
    with Image.open(tmp_path / "rgb.png") as img:
        assert np.array_equal(np.asarray(open_image(tmp_path / "rgb.png", "L")), np.asarray(img.convert("L")))


def test_masks_are_not_scaled(tmp_path):
    """A 16-bit label mask with value 1 stays foreground (full_range would round it to 0); a transparent
    pixel of an RGBA mask is background."""
    mask = np.zeros((SIZE[1], SIZE[0]), np.uint16)
    mask[5:10, 5:10] = 1
    mask[12:, 12:] = 40000
    path = save16(tmp_path / "m16.png", mask)
    assert np.array_equal(np.asarray(open_mask(path)) > 0, mask > 0)
    box = Letterbox.of(SIZE[0], SIZE[1], 24)
    assert letterbox_mask(str(path), box, 24, SIZE).sum() == (mask > 0).sum()
    assert np.asarray(open_mask(rgba_fixture(tmp_path / "rgba.png")))[0].tolist() == [0, 255, 255, 255]


# -- one reader for every path --------------------------------------------------------------------------------
def test_classification_and_dense_paths_read_through_the_one_reader(tmp_path, monkeypatch):
    values = gradient16()
    path = save16(tmp_path / "x16.png", values)
    # classification: decode, resize (the image's own shorter side: no resampling), crop to the same size
    cls = decode_resize_crop(path, SIZE[1], SIZE[1], 1)[..., 0].astype(np.float64)
    want = expected8(values)[:, (SIZE[0] - SIZE[1]) // 2:][:, :SIZE[1]]
    assert np.abs(cls - want).max() <= 1
    # dense: letterbox to the image's own width (no resampling), padded with black above and below
    box = Letterbox.of(SIZE[0], SIZE[1], SIZE[0])
    dense = letterbox_image(str(path), box, SIZE[0], 1)[box.pad_y:box.pad_y + SIZE[1], :, 0].astype(np.float64)
    assert np.abs(dense - expected8(values)).max() <= 1
    # both composite RGBA on the background
    rgba = rgba_fixture(tmp_path / "rgba.png")
    assert decode_resize_crop(rgba, 4, 4, 3)[0, 0].tolist() == [0, 0, 0]
    assert letterbox_image(str(rgba), Letterbox.of(4, 4, 4), 4, 3)[0, 0].tolist() == [0, 0, 0]
    assert decode_resize_crop(rgba, 4, 4, 3, background="white")[0, 0].tolist() == [255, 255, 255]
    assert letterbox_image(str(rgba), Letterbox.of(4, 4, 4), 4, 3, background="white")[0, 0].tolist() == [255] * 3
    # and both go through the same function
    calls = []
    original = imageio.to_8bit
    monkeypatch.setattr(imageio, "to_8bit", lambda *a, **k: calls.append(a[1]) or original(*a, **k))
    decode_resize_crop(path, SIZE[1], SIZE[1], 1)
    letterbox_image(str(path), box, SIZE[0], 3)
    assert calls == ["L", "RGB"]


# -- the options ------------------------------------------------------------------------------------------------
def test_every_source_takes_the_image_options():
    for registry in (DATASETS, DENSE_DATASETS):
        for name in registry.names():
            declared = declared_options(registry.get(name).options)
            for ok in ({"intensity": "percentile", "background": "white"}, {"intensity": "minmax", "background": 128}):
                problems = [p for p in declared.problems(ok, name) if "required" not in p]  # e.g. root
                assert not problems, problems
            problems = declared.problems({"intensity": "clip", "background": 300}, f"{name}.options")
            assert any(f"{name}.options.intensity: 'clip' is not allowed; expected one of 'full_range', 'minmax', "
                       "'percentile'" in p for p in problems), problems
            assert any(f"{name}.options.background: 300 is not allowed" in p for p in problems), problems
    assert image_options({"root": "x"}) == {"intensity": "full_range", "background": "black"}
    assert image_options({"intensity": "minmax"})["intensity"] == "minmax"
    for rule in ("full_range", "minmax", "percentile"):
        assert rule in IMAGE.declared["intensity"].doc


# -- end to end: a 16-bit set prepares (and trains) as its 8-bit rescaled copy ---------------------------------
def _csv_set(root, images: list[np.ndarray], sixteen: bool):
    lines = ["path,split,group,x"]
    for i, values in enumerate(images):
        path = root / "img" / f"{i}.png"
        if sixteen:
            save16(path, values)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(expected8(values).astype(np.uint8)).save(path)
        lines.append(f"img/{i}.png,{'test' if i % 8 < 2 else 'train'},p{i},{i % 2}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def _prepare(base, root, options):
    manifest = base / "manifest.json"
    write_json(manifest, DATASETS.get("csv_table").fetch(base, {"root": str(root), **options}))
    entry = {"type": "csv_table", "options": {"root": str(root), **options}, "val_fraction": 0.25, "split_seed": 0}
    return prepare("mine", entry, str(manifest), 36, 32, str(base / "store"))


def _images(n=48):
    """Class 1 is brighter in the image's centre; values over the whole 16-bit range."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        values = rng.integers(0, 40000, size=(40, 40)).astype(np.int64)
        if i % 2:
            values[12:28, 12:28] += 25000
        out.append(values.astype(np.uint16))
    return out


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    base = tmp_path_factory.mktemp("bits")
    images = _images()
    for name, sixteen in (("s16", True), ("s8", False)):
        _csv_set(base / name / "raw", images, sixteen)
    options = {"channels": 1, "label_columns": ["x"], "task": "binary"}
    return {name: _prepare(base / name, base / name / "raw", options) for name in ("s16", "s8")}


def test_a_16bit_set_prepares_as_its_8bit_rescaled_copy(stores):
    a, b = np.asarray(stores["s16"].images, dtype=np.int16), np.asarray(stores["s8"].images, dtype=np.int16)
    assert a.shape == b.shape == (48, 32, 32, 1)
    assert np.abs(a - b).max() <= 1
    assert a.max() > 200 and a.std() > 20  # not clipped white, not crushed black
    pd.testing.assert_frame_equal(stores["s16"].labels, stores["s8"].labels)


def test_a_16bit_set_trains_as_its_8bit_rescaled_copy(stores, tmp_path):
    from medtl.training import job

    hp = {
        "dataset": {"name": "mine", "metrics": None, "primary_metric": None},
        "arch": {"name": "resnet_tiny", "weights": {"type": "none"}, "preprocess": {"resize": 36, "crop": 32}},
        "strategy": {"name": "ft", "type": "ft", "settings": {}},
        "training": {"epochs": 2, "batch_size": 16, "patience": 2, "device": "cpu", "optimizer": "adam",
                     "eval_batch_size": 64},
        "lr": 3e-3, "seed": 0,
    }
    results = {}
    for name, store in stores.items():
        result = job.run(copy.deepcopy(hp), str(store.root), None, str(tmp_path / name), str(tmp_path / f"{name}.ckpt"))
        results[name] = json.loads(json.dumps({k: v for k, v in result.items() if k not in job.MACHINE_DEPENDENT}))
    for split in ("val", "test"):
        assert results["s16"][split] == pytest.approx(results["s8"][split], abs=1e-6, nan_ok=True), split
    # image by image, not only the (easy) metrics: the same scores
    a, b = (pd.read_parquet(tmp_path / name / "predictions.parquet") for name in ("s16", "s8"))
    pd.testing.assert_frame_equal(a, b, atol=1e-6)


def test_the_image_options_reach_the_dense_prepare_step(tmp_path):
    from dense_helpers import prepare_from

    root = tmp_path / "data"
    images = _images(12)
    for i, values in enumerate(images):
        save16(root / "images" / f"{i}.png", values)
        mask = np.zeros(values.shape, np.uint16)
        mask[12:28, 12:28] = 1  # a 16-bit label mask: value 1 is foreground
        save16(root / "masks" / "lung" / f"{i}.png", mask)
    options = {"root": str(root), "structures": ["lung"], "test_fraction": 0.3}
    store = prepare_from(tmp_path / "a", "segmentation", "mask_folder", options, 40)
    order = [int(n.split(".")[0]) for n in store.labels["image_id"]]
    got = np.asarray(store.images, dtype=np.float64)[..., 0]
    assert np.abs(got - np.stack([expected8(images[i]) for i in order])).max() <= 1
    assert np.asarray(store.masks).reshape(len(order), -1).sum(axis=1).tolist() == [16 * 16] * len(order)
    stretched = prepare_from(tmp_path / "b", "segmentation", "mask_folder", {**options, "intensity": "minmax"}, 40)
    assert all(img.min() == 0 and img.max() == 255 for img in np.asarray(stretched.images))


def test_the_intensity_option_reaches_the_classification_prepare_step(stores, tmp_path):
    root = stores["s16"].root.parent / "raw"
    store = _prepare(tmp_path, root, {"channels": 1, "label_columns": ["x"], "task": "binary",
                                      "intensity": "minmax"})
    # each image stretched from its own min..max (the values stop at 40000 of 65535 in class 0): brighter
    stretched, full = np.asarray(store.images, dtype=np.float64), np.asarray(stores["s16"].images, dtype=np.float64)
    assert stretched.mean() > full.mean() + 20


def test_array_sources_scale_wide_integers_instead_of_wrapping(tmp_path):
    """Sources that ship arrays (.npz): a uint16 array is scaled by its full range, as 16-bit files are,
    not wrapped modulo 256 (65535 -> 255, not 255; 256 -> 1, not 0)."""
    from medtl.data.imageio import fill_from_array

    images = np.array([[[0, 256], [32768, 65535]]] * 2, dtype=np.uint16)
    out = np.zeros((2, 2, 2, 1), dtype=np.uint8)
    fill_from_array(images, 2, 2)(out)
    assert out[0, :, :, 0].tolist() == [[0, 1], [128, 255]]
