"""Segmentation: Dice against hand values, box prompts, SAM at a small input size and checkpoints
resized to it, the dense store with masks, SPFT's stages (which parameters train in each), resume,
the report, and a short run on real chest X-ray masks (skipped when ../shared/data is absent)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from dense_helpers import REPO, SHARED_DATA, prepare_from, synth_store
from medtl.data.dense_store import StoreError, load_dense_store
from medtl.segmentation.metrics import dice, dice_bce_loss, soft_dice_loss
from medtl.segmentation.prompts import jitter_boxes, mask_boxes
from medtl.segmentation.sam import build_sam, encoder_units, mask_logits
from medtl.workflow.config import ConfigError
from medtl.workflow.dense_config import check_dense_config

COVID = SHARED_DATA / "cxr_covid_seg"


@pytest.fixture(scope="module")
def seg_store(tmp_path_factory):
    """30 synthetic radiographs at 64 px with heart and lung masks: 18 train / 5 val / 7 test."""
    return synth_store(tmp_path_factory.mktemp("seg"), "segmentation", n=30)


def hp(strategy="spft", settings=None, epochs=3, encoder="vit_tiny", img_size=64, seed=0, **training):
    return {"dataset": {"name": "synth", "size": 64},
            "model": {"name": "sam", "encoder": encoder, "img_size": img_size, "weights": {"type": "none"}},
            "strategy": {"name": strategy, "type": strategy, "settings": settings or {}},
            "training": {"epochs": epochs, "batch_size": 6, "lr": 0.0003, "device": "cpu", **training},
            "seed": seed}


# -- Dice, loss, prompts ------------------------------------------------------------------------------
def test_dice_against_hand_values():
    target = np.zeros((4, 4), np.uint8)
    target[0, :3] = target[1, :3] = 1          # 6 pixels
    pred = np.zeros((4, 4), np.uint8)
    pred[1, :] = 1                             # 4 pixels, 3 of them in target
    assert dice(pred, target) == pytest.approx(2 * 3 / (4 + 6))
    assert dice(target, target) == 1.0
    assert dice(np.zeros((4, 4)), target) == 0.0
    assert dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0  # nothing to find, nothing found
    assert dice(target.T, target) == pytest.approx(2 * 4 / 12)  # rows 0-2 x cols 0-1 against rows 0-1 x cols 0-2


def test_losses():
    target = torch.zeros(2, 8, 8)
    target[:, 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 50
    assert soft_dice_loss(perfect, target) < 1e-3
    assert soft_dice_loss(-perfect, target) > 0.9
    assert dice_bce_loss(perfect, target) < 1e-3
    zero = torch.zeros(2, 8, 8)
    expected = soft_dice_loss(zero, target) + F.binary_cross_entropy_with_logits(zero, target)
    assert dice_bce_loss(zero, target) == pytest.approx(float(expected))


def test_box_prompts_from_masks_and_their_jitter():
    masks = np.zeros((2, 10, 10), np.uint8)
    masks[0, 2:5, 3:7] = 1  # rows 2-4, columns 3-6
    boxes, present = mask_boxes(masks)
    assert boxes[0].tolist() == [3, 2, 7, 5] and present.tolist() == [True, False]
    rng = np.random.default_rng(0)
    many = np.repeat(boxes[:1], 500, axis=0)
    moved = jitter_boxes(many, 10, 0.2, rng)
    w, h = 4, 3
    assert np.all(np.abs(moved - many) <= np.array([0.2 * w, 0.2 * h, 0.2 * w, 0.2 * h]) + 1e-5)
    assert (moved[:, 2] > moved[:, 0]).all() and (moved[:, 3] > moved[:, 1]).all()
    assert not np.allclose(moved, many)
    assert np.array_equal(jitter_boxes(boxes, 10, 0.0, rng), boxes)
    edge = jitter_boxes(np.array([[0, 0, 10, 10]], np.float32), 10, 0.5, np.random.default_rng(1))
    assert edge.min() >= 0 and edge.max() <= 10


# -- SAM ------------------------------------------------------------------------------------------------
def test_sam_vit_b_is_the_official_architecture_at_any_size(tmp_path):
    """Our 1024 px ViT-B has segment-anything's own state dict layout (so official checkpoints load);
    a 1024 px checkpoint loads into a 128 px model with position embeddings resized."""
    from segment_anything import sam_model_registry

    official = sam_model_registry["vit_b"]().state_dict()
    ours = build_sam("vit_b", 1024)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in official.items()}
    encoder_params = sum(p.numel() for p in ours.image_encoder.parameters())
    assert 85e6 < encoder_params < 90e6 and len(ours.image_encoder.blocks) == 12
    torch.save(ours.state_dict(), tmp_path / "vit_b_1024.pth")
    small = build_sam("vit_b", 128, tmp_path / "vit_b_1024.pth")
    state, full = small.state_dict(), ours.state_dict()
    assert state["image_encoder.pos_embed"].shape == (1, 8, 8, 768)
    grid = full["image_encoder.pos_embed"].permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    assert torch.allclose(state["image_encoder.pos_embed"], expected)
    assert state["image_encoder.blocks.2.attn.rel_pos_h"].shape == (15, 64)     # global block: 2 x 8 - 1
    assert state["image_encoder.blocks.0.attn.rel_pos_h"].shape == (27, 64)     # windowed: 2 x 14 - 1, as loaded
    resized = {"image_encoder.pos_embed", *(k for k in state if "rel_pos" in k and
                                             state[k].shape != full[k].shape)}
    assert all(torch.equal(state[k], full[k]) for k in state if k not in resized)
    with torch.no_grad():
        out = mask_logits(small.eval(), torch.zeros(1, 96, 96, 1, dtype=torch.uint8),
                          [torch.tensor([[10.0, 10, 50, 60]])])
    assert out[0].shape == (1, 96, 96)


def test_sam2_image_path_from_the_sam2_package(tmp_path):
    """SAM 2.1 Hiera-T from the sam2 package's config at 64 px: only the image path (SAM's names), every
    encoder parameter in a unit, box prompts give masks; an official checkpoint (SAM2Base's state dict, at
    1024 px, video memory included) loads into it renamed, and neither family takes the other's."""
    from sam2.build_sam import build_sam2

    from medtl.segmentation.sam import matches
    from medtl.segmentation.spec import ENCODERS

    sam2 = build_sam("sam2.1_hiera_tiny", 64)
    assert {n.split(".")[0] for n, _ in sam2.named_parameters()} == {"image_encoder", "prompt_encoder",
                                                                      "mask_decoder"}
    units = encoder_units(sam2)
    assert len(units) == 12 and units[-1][-2:] == ["image_encoder.neck", "image_encoder.no_mem_embed"]
    encoder = [n for n, _ in sam2.named_parameters() if n.startswith("image_encoder.")]
    assert all(any(matches(n, u) for u in units) for n in encoder)
    with torch.no_grad():
        out = mask_logits(sam2.eval(), torch.zeros(2, 48, 48, 1, dtype=torch.uint8),
                          [torch.tensor([[4.0, 4, 30, 40], [10, 10, 20, 20]]), torch.zeros(0, 4)])
    assert out[0].shape == (2, 48, 48) and out[1].shape == (0, 48, 48)

    torch.manual_seed(5)
    official = build_sam2(ENCODERS.get("sam2.1_hiera_tiny").config, None, device="cpu", apply_postprocessing=False)
    torch.save({"model": official.state_dict()}, tmp_path / "sam2.1_hiera_tiny.pt")
    loaded = build_sam("sam2.1_hiera_tiny", 64, tmp_path / "sam2.1_hiera_tiny.pt").state_dict()
    reference = official.state_dict()
    assert torch.equal(loaded["mask_decoder.conv_s0.weight"], reference["sam_mask_decoder.conv_s0.weight"])
    assert torch.equal(loaded["prompt_encoder.point_embeddings.2.weight"],
                       reference["sam_prompt_encoder.point_embeddings.2.weight"])
    assert torch.equal(loaded["image_encoder.no_mem_embed"], reference["no_mem_embed"])
    assert torch.equal(loaded["image_encoder.trunk.blocks.11.mlp.layers.1.weight"],
                       reference["image_encoder.trunk.blocks.11.mlp.layers.1.weight"])
    with pytest.raises(ValueError, match="SAM 2 checkpoint"):
        build_sam("vit_tiny", 64, tmp_path / "sam2.1_hiera_tiny.pt")
    torch.save(build_sam("vit_tiny", 64).state_dict(), tmp_path / "vit.pth")
    with pytest.raises(ValueError, match="another encoder"):
        build_sam("sam2.1_hiera_tiny", 64, tmp_path / "vit.pth")
    with pytest.raises(ValueError, match="multiple of 32"):
        build_sam("sam2.1_hiera_tiny", 48)


def test_checkpoint_of_another_encoder_is_refused(tmp_path):
    torch.save({"model": build_sam("vit_tiny", 64).state_dict()}, tmp_path / "tiny.pth")
    assert build_sam("vit_tiny", 32, tmp_path / "tiny.pth").image_encoder.pos_embed.shape == (1, 2, 2, 96)
    with pytest.raises(ValueError, match="checkpoint of another encoder"):
        build_sam("vit_b", 64, tmp_path / "tiny.pth")


def test_encoder_units_cover_the_encoder_top_last():
    sam = build_sam("vit_tiny", 64)
    units = encoder_units(sam)
    assert units[0][:2] == ["image_encoder.patch_embed", "image_encoder.pos_embed"]
    assert units[-1] == ["image_encoder.blocks.3", "image_encoder.neck"]
    covered = {n for n, _ in sam.image_encoder.named_parameters()}
    from medtl.segmentation.sam import matches

    assert all(any(matches(f"image_encoder.{n}", u) for u in units) for n in covered)


# -- the store with masks ------------------------------------------------------------------------------
def test_mask_folder_letterboxes_masks_with_their_images(tmp_path):
    """Non-square images and masks in the folder layout: after preparation every mask pixel sits on
    the bright structure it was drawn from, and a missing mask file means 'not annotated'."""
    root = tmp_path / "src"
    for sub in ("images", "masks/organ", "masks/spot"):
        (root / sub).mkdir(parents=True)
    for i in range(6):
        img = np.zeros((60, 120), np.uint8)
        img[10:50, 20 + i:60 + i] = 200
        Image.fromarray(img).save(root / "images" / f"case{i}.jpg" if i % 2 else root / "images" / f"case{i}.png")
        Image.fromarray((img > 0).astype(np.uint8) * 255).save(root / "masks" / "organ" / f"case{i}.png")
        if i != 3:
            spot = np.zeros((60, 120), np.uint8)
            spot[20:30, 80:100] = 1
            Image.fromarray(spot).save(root / "masks" / "spot" / f"case{i}.png")
    pd.DataFrame({"image": [f"case{i}" for i in range(6)], "split": ["train"] * 4 + ["test"] * 2,
                  "group": ["p0", "p0", "p1", "p2", "p3", "p4"]}).to_csv(root / "splits.csv", index=False)
    store = prepare_from(tmp_path, "segmentation", "mask_folder",
                         {"root": str(root), "structures": ["organ", "spot"], "splits_csv": "splits.csv"}, size=48)
    assert store.masks.shape == (6, 2, 48, 48) and store.classes == ["organ", "spot"]
    for i in range(6):
        organ = store.masks[i, 0].astype(bool)
        image = store.images[i, ..., 0]
        assert organ.sum() > 100 and image[organ].min() > 100 and image[~organ].max() < 100
        assert store.masks[i, :, :12].max() == 0 and store.masks[i, :, 36:].max() == 0  # padding rows
    assert store.labels.groupby("group")["split"].nunique().max() == 1  # p0's two images stay together
    assert (store.labels["split"] == "test").sum() == 2
    missing = store.labels.set_index("image_id").loc["case3.jpg"]
    assert missing["spot"] == 0 and store.masks[int(missing["index"]), 1].max() == 0
    with pytest.raises(StoreError, match="a segmentation store, but a detection"):
        load_dense_store(store.root, task="detection")


# -- SPFT's stages ----------------------------------------------------------------------------------------
def params_of(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def fit_with_snapshots(seg_store, **kwargs):
    from medtl.segmentation.train import build_tuner

    tuner = build_tuner(hp(**kwargs), seg_store, None, torch.device("cpu"))
    snaps = [params_of(tuner.sam)]
    grads = []
    original = tuner.apply_stage

    def apply_stage(epoch):
        record = original(epoch)
        grads.append({n for n, p in tuner.sam.named_parameters() if p.requires_grad})
        return record

    tuner.apply_stage = apply_stage
    tuner.on_epoch_end.append(lambda epoch: snaps.append(params_of(tuner.sam)))
    outcome = tuner.fit()
    return tuner, outcome, snaps, grads


def in_units(name: str, units) -> bool:
    from medtl.segmentation.sam import matches

    return any(matches(name, u) for u in units)


ENCODERS = ["vit_tiny", "sam2.1_hiera_tiny"]  # SAM and SAM 2 through the same code


@pytest.mark.parametrize("encoder", ENCODERS)
def test_spft_trains_decoder_first_then_the_top_encoder_blocks(seg_store, encoder):
    tuner, outcome, snaps, grads = fit_with_snapshots(
        seg_store, strategy="spft", settings={"head_epochs": 1, "top_k": 2, "ema_decay": 0.9,
                                              "encoder_lr_ratio": 0.25}, epochs=3, encoder=encoder)
    units = tuner.units  # vit_tiny: 4 blocks, Hiera-T: 12, bottom-up
    assert [h["stage"] for h in outcome.history] == ["head", "head+top1", "head+top2"]
    for epoch, top in enumerate([[], units[-1:], units[-2:]]):
        before, after = snaps[epoch], snaps[epoch + 1]
        changed = {n for n in before if not torch.equal(before[n], after[n])}
        trainable = {n for n in before if n.startswith("mask_decoder.") or in_units(n, top)}
        assert grads[epoch] == trainable, f"epoch {epoch}"
        assert changed <= trainable, f"epoch {epoch}: frozen parameters changed: {sorted(changed - trainable)[:5]}"
        assert any(n.startswith("mask_decoder.") for n in changed)
        for unit in top:  # every unfrozen unit trained
            assert any(in_units(n, [unit]) for n in changed), f"epoch {epoch}: {unit} did not train"
        assert not any(n.startswith("prompt_encoder.") for n in changed | grads[epoch])
        assert outcome.history[epoch]["trainable_params"] == sum(
            p.numel() for n, p in tuner.sam.named_parameters() if n in trainable)
    # differential learning rates: the encoder's group runs at encoder_lr_ratio x the decoder's
    groups = {g["name"]: g for g in tuner.optimizer.param_groups}
    assert groups["image_encoder"]["lr"] == pytest.approx(0.25 * groups["mask_decoder"]["lr"])
    assert groups["mask_decoder"]["lr"] < 0.0003  # cosine: decayed by the end
    # EMA: the evaluated model is the average, not the last weights
    assert tuner.eval_model() is tuner.ema.module
    live, avg = params_of(tuner.sam), params_of(tuner.ema.module)
    key = "mask_decoder.output_upscaling.0.weight"
    assert not torch.equal(live[key], avg[key])


@pytest.mark.parametrize("encoder", ENCODERS)
def test_ft_trains_encoder_and_decoder_but_never_the_prompt_encoder(seg_store, encoder):
    tuner, outcome, snaps, grads = fit_with_snapshots(seg_store, strategy="ft", epochs=1, encoder=encoder)
    changed = {n for n in snaps[0] if not torch.equal(snaps[0][n], snaps[1][n])}
    everything = {n for n in snaps[0] if not n.startswith("prompt_encoder.")}
    assert grads[0] == everything and outcome.history[0]["stage"] == "full"
    assert {n.split(".")[0] for n in changed} == {"image_encoder", "mask_decoder"}
    assert any(in_units(n, [tuner.units[0]]) for n in changed)  # the lowest encoder block trained too
    assert tuner.ema is None and tuner.eval_model() is tuner.sam
    assert {g["lr"] for g in tuner.optimizer.param_groups} == {0.0003}  # one rate, constant


def comparable(result: dict) -> str:
    """A job's metrics without its wall time, as text: exact."""
    return json.dumps({k: v for k, v in result.items() if k != "seconds"}, sort_keys=True)


def test_killed_segmentation_job_resumes_as_an_uninterrupted_run(seg_store, tmp_path, capsys):
    """Killed after its second epoch (SPFT's stage 2: EMA on, one encoder block unfrozen), the job resumes
    and ends with the uninterrupted run's metrics, history and predictions, exactly."""
    from medtl.segmentation.train import run

    job = hp(strategy="spft", settings={"head_epochs": 1, "top_k": 2, "ema_decay": 0.9}, epochs=3)

    def args(name):
        return job, str(seg_store.root), str(tmp_path / name / "run"), str(tmp_path / name / "ckpt" / "resume.ckpt")

    reference = run(*args("reference"))

    def kill(epoch):
        if epoch == 1:
            raise KeyboardInterrupt("killed after epoch 2")

    with pytest.raises(KeyboardInterrupt):
        run(*args("killed"), hooks=[kill])
    assert (tmp_path / "killed" / "ckpt" / "resume.ckpt").exists() and not (tmp_path / "killed" / "run").exists()
    capsys.readouterr()
    result = run(*args("killed"))
    err = capsys.readouterr().err
    assert "resumed from" in err and "after epoch 1" in err
    assert [line for line in err.splitlines() if "] epoch " in line][0].startswith("[segmentation] epoch 3/3")
    assert result["epochs_run"] == 3 and [s["stage"] for s in result["stages"]] == ["head", "head+top1", "head+top2"]
    assert comparable(result) == comparable(reference)
    drop = ["seconds"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "killed" / "run" / "history.csv").drop(columns=drop),
                                  pd.read_csv(tmp_path / "reference" / "run" / "history.csv").drop(columns=drop),
                                  check_exact=True)
    with np.load(tmp_path / "killed" / "run" / "predictions.npz") as a, \
            np.load(tmp_path / "reference" / "run" / "predictions.npz") as b:
        assert np.array_equal(a["masks"], b["masks"])
    assert set(result["test"]) == {"dice", "dice_heart", "dice_left_lung", "dice_right_lung"}
    assert all(0 <= v <= 1 for v in result["test"].values())
    per = [result["test"][f"dice_{s}"] for s in seg_store.classes]
    assert result["test"]["dice"] == pytest.approx(np.mean(per))
    per_image = pd.read_csv(tmp_path / "killed" / "run" / "per_image.csv")
    assert per_image.groupby("structure")["dice"].mean().to_dict() == pytest.approx(
        {s: result["test"][f"dice_{s}"] for s in seg_store.classes})
    with np.load(tmp_path / "killed" / "run" / "predictions.npz") as npz:
        assert npz["masks"].shape == (len(seg_store.indices("test")), 3, 64, 64)
        assert set(np.unique(npz["masks"])) <= {0, 1}
    assert not (tmp_path / "killed" / "ckpt" / "resume.ckpt").exists()


# -- report ------------------------------------------------------------------------------------------------
def test_segmentation_report(seg_store, tmp_path):
    from medtl.segmentation.report import build_report

    test = seg_store.indices("test")
    files = {"metrics": [], "predictions": [], "per_image": []}
    for strategy, values in {"ft": [0.8, 0.9], "spft": [0.7, 0.7]}.items():
        for seed, v in enumerate(values):
            d = tmp_path / strategy / str(seed)
            d.mkdir(parents=True)
            scores = {"dice": v, **{f"dice_{s}": v for s in seg_store.classes}}
            (d / "metrics.json").write_text(json.dumps({
                "task": "segmentation", "dataset": "synth", "model": "sam", "strategy": strategy, "seed": seed,
                "classes": seg_store.classes, "val": scores, "test": scores}))
            np.savez(d / "predictions.npz", index=test, masks=np.asarray(seg_store.masks[test]))
            pd.DataFrame([{"index": int(i), "image_id": "x", "structure": "heart", "dice": v} for i in test]).to_csv(
                d / "per_image.csv", index=False)
            for k, name in (("metrics", "metrics.json"), ("predictions", "predictions.npz"),
                            ("per_image", "per_image.csv")):
                files[k].append(str(d / name))
    build_report(files["metrics"], files["predictions"], files["per_image"], {"synth": str(seg_store.root)},
                 str(tmp_path / "report"), model_order=["sam"], strategy_order=["ft", "spft"])
    table = pd.read_csv(tmp_path / "report" / "segmentation_table.csv")
    assert list(table.columns) == ["Dataset", "Model", "Strategy", "Seeds", "Dice heart", "Dice left lung",
                                   "Dice right lung", "Mean Dice"]
    assert table.loc[0, "Mean Dice"] == "**0.850 ± 0.050**" and table.loc[1, "Mean Dice"] == "0.700 ± 0.000"
    assert len(pd.read_csv(tmp_path / "report" / "per_image.csv")) == 4 * len(test)
    figure = Image.open(tmp_path / "report" / "figures" / "masks_synth.png")
    assert figure.size[0] > 300 and figure.size[1] > 200


# -- config --------------------------------------------------------------------------------------------
def test_schema_defaults_are_the_jobs_defaults():
    from medtl.segmentation.train import MODEL_DEFAULTS, TRAINING_DEFAULTS

    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    section = schema["properties"]["segmentation"]["properties"]
    props = section["training"]["properties"]
    assert {k: v.get("default") for k, v in props.items()} == TRAINING_DEFAULTS
    model = section["models"]["additionalProperties"]["properties"]
    assert {k: model[k]["default"] for k in MODEL_DEFAULTS} == MODEL_DEFAULTS == {"encoder": "vit_b", "img_size": 1024}


@pytest.mark.parametrize("section, fragment", [
    ({"datasets": {"d": {"type": "yolo_folder"}}}, "'yolo_folder' has no segmentation annotations"),
    ({"models": {"m": {"encoder": "vit_s"}}}, "unknown SAM encoder 'vit_s'"),
    ({"models": {"m": {"encoder": "sam2.1_hiera_tiny", "img_size": 48}}},
     "segmentation.models.m.img_size: 48 is not allowed; sam2.1_hiera_tiny needs a multiple of 32"),
    ({"strategies": {"spft": {"encoder_lr": 0.1}}}, "segmentation.strategies.spft.encoder_lr: unknown setting"),
])
def test_config_errors_are_named(section, fragment):
    base = {"datasets": {"synth_cxr_dense": {}}, "models": {"sam": {}}, "strategies": {"ft": {}}}
    with pytest.raises(ConfigError) as err:
        check_dense_config({"segmentation": {**base, **section}})
    assert fragment in str(err.value)


# -- real data -----------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_covid_cxr_heart_and_lung_masks_train_and_evaluate(tmp_path):
    """24 of the 100 radiographs with left lung, right lung and heart masks (full size, mixed modes and
    sizes), through mask_folder at 64 px: four epochs of a tiny SAM and Dice per structure on real images."""
    if not COVID.is_dir():
        pytest.skip(f"{COVID} is absent")
    from medtl.segmentation.train import run

    structures = {"heart": "heart_mask", "left_lung": "left_lung_mask", "right_lung": "right_lung_mask"}
    options = {"root": str(COVID), "index": "anatomy_masks/index.csv", "structures": structures, "limit": 24,
               "test_fraction": 0.3}
    store = prepare_from(tmp_path, "segmentation", "mask_folder", options, size=64, name="covid")
    assert store.masks.shape == (24, 3, 64, 64) and store.images.shape[-1] == 1
    annotated = store.labels[list(structures)].to_numpy().astype(bool)
    assert (store.masks.reshape(24, 3, -1).max(axis=2).astype(bool) == annotated).all()
    # lungs and heart are large: a few percent of the picture at least, on average
    assert store.masks.mean(axis=(0, 2, 3)).min() > 0.02
    job = hp(strategy="ft", epochs=4, batch_size=4)
    job["dataset"]["name"] = "covid"
    result = run(job, str(store.root), str(tmp_path / "run"), str(tmp_path / "ckpt.pt"))
    assert set(result["test"]) == {"dice", "dice_heart", "dice_left_lung", "dice_right_lung"}
    assert all(v is None or 0 <= v <= 1 for v in result["test"].values())
    print("COVID CXR (24 images, 64 px, SAM vit_tiny from scratch, ft, 4 epochs): test", result["test"])
