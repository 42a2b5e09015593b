"""Starting weights of the dense models: the synthetic source domain, the pipeline's pretraining of a
detector and of SAM (and that a job starts from it), released checkpoints fetched by the local rule
(from a local server: never the real addresses), and the config checks of ``weights``."""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch

from data_server import serve
from dense_helpers import prepare_from
from medtl.dense_weights import SAM_RELEASES, fetch_release, problems, release_url, weights_file
from medtl.detection import offline
from medtl.workflow.config import ConfigError
from medtl.workflow.dense_config import check_dense_config


@pytest.fixture(scope="module", autouse=True)
def ultralytics_offline(tmp_path_factory):
    offline.prepare(tmp_path_factory.mktemp("ultralytics"), threads=2)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """The source domain, 32 scenes at 64 px, prepared for both tasks."""
    root = tmp_path_factory.mktemp("shapes")
    options = {"n": 32, "size": 64}
    return {task: prepare_from(root / task, task, "synth_shapes_dense", options, size=64, name="shapes")
            for task in ("detection", "segmentation")}


def test_the_source_domain_has_a_box_and_a_mask_per_shape(shapes):
    det, seg = shapes["detection"], shapes["segmentation"]
    assert det.classes == seg.classes == ["disk", "square", "triangle", "ring"]
    assert len(det.boxes) > 32 and seg.masks.shape == (32, 4, 64, 64)
    for i in range(8):  # a shape's box is its mask's (one of each shape at most per scene)
        xy, ids = det.boxes_of(i)
        present = np.flatnonzero(seg.masks[i].reshape(4, -1).any(axis=1))
        assert sorted(ids.tolist()) == present.tolist()
        for (x1, y1, x2, y2), k in zip(xy, ids):
            rows, cols = np.nonzero(seg.masks[i, k])
            assert abs(x1 - cols.min()) <= 1.5 and abs(x2 - cols.max() - 1) <= 1.5
            assert abs(y1 - rows.min()) <= 1.5 and abs(y2 - rows.max() - 1) <= 1.5


# -- the pipeline's pretraining -------------------------------------------------------------------------------
def test_sam_pretraining_gives_a_checkpoint_a_job_starts_from(shapes, tmp_path):
    from medtl.segmentation.sam import build_sam
    from medtl.segmentation.train import build_tuner, pretrain

    model = {"name": "sam", "encoder": "vit_tiny", "img_size": 64}
    training = {"epochs": 9, "batch_size": 8, "lr": 0.001, "device": "cpu"}
    out = tmp_path / "pretrain-shapes.pt"
    done = pretrain(model, {"type": "pretrain", "dataset": "shapes", "epochs": 2}, training,
                    str(shapes["segmentation"].root), str(out), str(tmp_path / "ckpt"))
    assert len(done["history"]) == 2 and not (tmp_path / "ckpt").exists()
    state = torch.load(out, weights_only=True)
    torch.manual_seed(0)
    init = build_sam("vit_tiny", 64).state_dict()
    # everything trained, the prompt encoder included (fine-tuning then keeps it frozen, as SAM's own)
    for part in ("image_encoder.", "prompt_encoder.", "mask_decoder."):
        assert any(not torch.equal(v, init[k]) for k, v in state.items() if k.startswith(part) and
                   v.is_floating_point() and "pixel" not in k), part
    # a fine-tuning job of another task's data starts from exactly these weights
    from dense_helpers import synth_store

    target = synth_store(tmp_path / "target", "segmentation", n=24)
    hp = {"dataset": {"name": "synth", "size": 64}, "model": {**model, "weights": {"type": "pretrain"}},
          "strategy": {"name": "ft", "type": "ft", "settings": {}}, "training": training, "seed": 3}
    tuner = build_tuner(hp, target, str(out), torch.device("cpu"))
    assert all(torch.equal(v, state[k]) for k, v in tuner.sam.state_dict().items())


def test_detector_pretraining_gives_a_checkpoint_a_job_starts_from(shapes, tmp_path):
    from medtl.detection.export import export_yolo
    from medtl.detection.train import pretrain, train
    from dense_helpers import synth_store

    source = export_yolo(shapes["detection"].root, tmp_path / "yolo_shapes")
    training = {"batch_size": 8, "nbs": 8, "lr0": 0.002, "warmup_epochs": 0, "workers": 0, "device": "cpu",
                "augment": {"mosaic": 0.0, "close_mosaic": 0}}
    out = tmp_path / "pretrain-shapes.pt"
    pretrain({"name": "yolo", "type": "yolo", "cfg": "yolov8n.yaml"}, {"type": "pretrain", "epochs": 1}, training,
             {"name": "shapes", "size": 64}, str(source), str(out), str(tmp_path / "ckpt"), str(tmp_path / "cfg"))
    assert out.exists() and not (tmp_path / "ckpt").exists()
    pretrained = torch.load(out, weights_only=False)
    pretrained = (pretrained.get("ema") or pretrained["model"]).float().state_dict()
    assert pretrained["model.22.cv3.0.2.weight"].shape[0] == 4  # the source's four shapes

    target = synth_store(tmp_path / "target", "detection", n=24)
    folder = export_yolo(target.root, tmp_path / "yolo_target")
    first = {}

    def start(trainer):
        if trainer.epoch == 0:
            first.update({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})

    hp = {"dataset": {"name": "synth", "size": 64},
          "model": {"name": "yolo", "type": "yolo", "cfg": "yolov8n.yaml", "weights": {"type": "pretrain"}},
          "strategy": {"name": "ft", "type": "ft", "settings": {}}, "training": {**training, "epochs": 1}, "seed": 0}
    train(hp, str(folder), str(tmp_path / "job"), weights_file=str(out), callbacks={"on_train_epoch_start": [start]})
    backbone = [k for k in first if int(k.split(".")[1]) < 10]
    assert backbone and all(torch.equal(first[k], pretrained[k]) for k in backbone)
    assert first["model.22.cv3.0.2.weight"].shape[0] == 2  # the target's two classes: a new class output


# -- released checkpoints ---------------------------------------------------------------------------------------
def test_release_addresses():
    assert release_url("detection", {"type": "yolo", "cfg": "yolov8n.yaml"}) == \
        "https://github.com/ultralytics/assets/releases/download/v8.3.0/yolov8n.pt"
    assert release_url("detection", {"type": "rtdetr"}).endswith("/rtdetr-l.pt")  # the kind's default cfg
    assert release_url("detection", {"type": "rtdetr", "cfg": "rtdetr-tiny.yaml"}) is None
    assert release_url("segmentation", {}) == SAM_RELEASES["vit_b"] == \
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
    assert release_url("segmentation", {"encoder": "sam2.1_hiera_small"}) == \
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_small.pt"
    assert release_url("segmentation", {"encoder": "vit_tiny", "weights": {"type": "release", "url": "file:///x"}}) \
        == "file:///x"
    assert weights_file("res", "segmentation", "sam", {"weights": {"type": "release"}}) == \
        "res/segmentation/weights/sam/release.pt"
    assert weights_file("res", "detection", "m", {"weights": {"type": "pretrain", "dataset": "s"}}) == \
        "res/detection/weights/m/pretrain-s.pt"
    assert weights_file("res", "detection", "m", {}) is None


def _bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_a_released_ultralytics_checkpoint_is_fetched_once_and_checked(tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    data = _bytes({"model": DetectionModel("yolov8n.yaml", nc=80, verbose=False).half(), "epoch": -1})
    with serve() as server:
        url = server.add("/assets/yolov8n.pt", data)
        entry = {"type": "yolo", "cfg": "yolov8n.yaml",
                 "weights": {"type": "release", "url": url, "sha256": hashlib.sha256(data).hexdigest()}}
        fetch_release("detection", entry, str(tmp_path / "release.pt"), str(tmp_path / "cache"))
        assert (tmp_path / "release.pt").read_bytes() == data and (tmp_path / "cache" / "yolov8n.pt").exists()
        fetch_release("detection", entry, str(tmp_path / "again.pt"), str(tmp_path / "cache"))
        assert len(server.requests) == 1  # the cached file is reused
        wrong = {**entry, "weights": {**entry["weights"], "sha256": "0" * 64}}
        with pytest.raises(RuntimeError, match="could not fetch .*yolov8n.pt"):
            fetch_release("detection", wrong, str(tmp_path / "bad.pt"), str(tmp_path / "other_cache"))
        other_model = {**entry, "cfg": "yolov8s.yaml"}
        with pytest.raises(ValueError, match="not a checkpoint of yolov8s.yaml"):
            fetch_release("detection", other_model, str(tmp_path / "s.pt"), str(tmp_path / "cache_s"))
    assert not (tmp_path / "bad.pt").exists() and not (tmp_path / "s.pt").exists()


def test_a_released_sam_checkpoint_is_fetched_and_checked(tmp_path):
    from medtl.segmentation.sam import build_sam

    data = _bytes(build_sam("vit_tiny", 64).state_dict())
    with serve() as server:
        url = server.add("/segment_anything/sam_tiny.pth", data)
        entry = {"encoder": "vit_tiny", "img_size": 32, "weights": {"type": "release", "url": url}}
        fetch_release("segmentation", entry, str(tmp_path / "release.pt"), str(tmp_path / "cache"))
        assert build_sam("vit_tiny", 32, tmp_path / "release.pt").image_encoder.pos_embed.shape == (1, 2, 2, 96)
        with pytest.raises(ValueError, match="checkpoint of another encoder"):
            fetch_release("segmentation", {**entry, "encoder": "vit_b"}, str(tmp_path / "b.pt"), str(tmp_path / "c"))
    assert not (tmp_path / "b.pt").exists()


# -- config checks -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task, section, fragment", [
    ("detection", {"models": {"m": {"type": "yolo", "weights": {"type": "pretrain", "dataset": "shapes"}}}},
     "detection.models.m.weights.dataset: 'shapes' is not in detection.source_datasets"),
    ("detection", {"models": {"m": {"type": "rtdetr", "cfg": "rtdetr-tiny.yaml", "weights": {"type": "release"}}}},
     "detection.models.m.weights: no released checkpoint is known for the model's cfg"),
    ("segmentation", {"models": {"m": {"encoder": "vit_tiny", "weights": {"type": "release"}}}},
     "segmentation.models.m.weights: no released checkpoint is known for encoder 'vit_tiny'"),
    ("segmentation", {"source_datasets": {"s": {"type": "yolo_folder"}}},
     "segmentation.source_datasets.s: 'yolo_folder' has no segmentation annotations"),
    ("detection", {"source_datasets": {"synth_cxr_dense": {}}}, "also under detection.datasets"),
    ("segmentation", {"models": {"m": {"weights": {"type": "release", "sha256": "abc"}}}}, "64 hexadecimal"),
])
def test_weights_config_errors_are_named(task, section, fragment):
    base = {"datasets": {"synth_cxr_dense": {}}, "models": {"m": {}}, "strategies": {"ft": {}}}
    with pytest.raises(ConfigError) as err:
        check_dense_config({task: {**base, **section}})
    assert fragment in str(err.value)


def test_pretraining_on_a_source_dataset_is_accepted():
    section = {"datasets": {"synth_cxr_dense": {}}, "source_datasets": {"shapes": {"type": "synth_shapes_dense"}},
               "models": {"m": {"type": "yolo", "weights": {"type": "pretrain", "dataset": "shapes", "epochs": 2}}},
               "strategies": {"ft": {}}}
    check_dense_config({"detection": section})
    assert problems("detection", "x", section["models"]["m"], section["source_datasets"]) == []


@pytest.mark.slow
def test_fetch_rule_brings_released_checkpoints_before_the_jobs(tmp_path):
    """Through Snakemake: {type: release} schedules the local rule fetch_dense_weights once per model before
    its jobs, and the rule fetches (here from a local server) and checks each checkpoint."""
    from ultralytics.nn.tasks import DetectionModel

    from medtl.segmentation.sam import build_sam
    from workflow_helpers import scheduled_jobs, snakemake, tiny_config, write_config

    torch.manual_seed(0)
    yolo = _bytes({"model": DetectionModel("yolov8n.yaml", nc=80, verbose=False).half(), "epoch": -1})
    sam = _bytes(build_sam("vit_tiny", 64).state_dict())
    with serve() as server:
        dense = {"datasets": {"synth_cxr_dense": {"options": {"n": 24}, "size": 64}}, "strategies": {"ft": {}}}
        config = tiny_config(
            detection={**dense, "models": {"yolo": {"type": "yolo", "cfg": "yolov8n.yaml", "weights": {
                "type": "release", "url": server.add("/v8.3.0/yolov8n.pt", yolo)}}}},
            segmentation={**dense, "models": {"sam": {"encoder": "vit_tiny", "img_size": 64, "weights": {
                "type": "release", "url": server.add("/segment_anything/sam_tiny.pth", sam),
                "sha256": hashlib.sha256(sam).hexdigest()}}}})
        cfg = write_config(tmp_path / "config.yaml", config)
        jobs = scheduled_jobs(tmp_path, cfg)
        fetches = sorted(w for rule, w in jobs if rule == "fetch_dense_weights")
        assert fetches == ["task=detection, model=yolo", "task=segmentation, model=sam"]
        assert not server.requests  # planning downloads nothing
        targets = ["results/detection/weights/yolo/release.pt", "results/segmentation/weights/sam/release.pt"]
        snakemake(tmp_path, cfg, *targets)
    assert (tmp_path / targets[0]).read_bytes() == yolo and (tmp_path / targets[1]).read_bytes() == sam
    assert sorted(path for path, _ in server.requests) == ["/segment_anything/sam_tiny.pth", "/v8.3.0/yolov8n.pt"]


@pytest.mark.slow
def test_pretraining_reruns_only_when_what_it_uses_changes(tmp_path):
    """Through Snakemake: the fine-tuning epochs (and a learning rate the weights entry sets itself) are not
    the pretraining's, so editing them reruns no pretraining; the weights entry's own epochs do."""
    import copy

    from workflow_helpers import scheduled_jobs, snakemake, tiny_config, write_config

    source = {"shapes": {"type": "synth_shapes_dense", "options": {"n": 12}, "size": 32}}
    dense = {"datasets": {"synth_cxr_dense": {"options": {"n": 12}, "size": 32}}, "source_datasets": source,
             "strategies": {"ft": {}}}
    config = tiny_config(
        detection={**dense, "training": {"epochs": 2, "batch_size": 4, "workers": 0}, "models": {"yolo": {
            "type": "yolo", "cfg": "yolov8n.yaml",
            "weights": {"type": "pretrain", "dataset": "shapes", "epochs": 1, "lr": 0.002}}}},
        segmentation={**dense, "training": {"epochs": 2, "batch_size": 4}, "models": {"sam": {
            "encoder": "vit_tiny", "img_size": 32, "weights": {"type": "pretrain", "dataset": "shapes", "epochs": 1}}}})
    targets = ["results/detection/weights/yolo/pretrain-shapes.pt", "results/segmentation/weights/sam/pretrain-shapes.pt"]
    snakemake(tmp_path, write_config(tmp_path / "config.yaml", config), *targets)

    def pretraining_jobs(change) -> list[str]:
        edited = copy.deepcopy(config)
        change(edited)
        jobs = scheduled_jobs(tmp_path, write_config(tmp_path / "edited.yaml", edited), *targets)
        return sorted(rule for rule, _ in jobs if rule.startswith("pretrain"))

    def finetuning(c):
        c["detection"]["training"].update(epochs=50, lr0=0.01)
        c["segmentation"]["training"].update(epochs=50)

    assert pretraining_jobs(finetuning) == []
    assert pretraining_jobs(lambda c: c["detection"]["training"].update(batch_size=8)) == ["pretrain_detector"]
    assert pretraining_jobs(lambda c: c["segmentation"]["models"]["sam"]["weights"].update(epochs=3)) == \
        ["pretrain_sam"]


@pytest.mark.parametrize("encoder", ["vit_b", "sam2.1_hiera_tiny"])
def test_released_sam_files_are_read_by_their_owners_builders(encoder, tmp_path):
    """The published layouts, each made by the owner's own model builder (random weights, real size): SAM's
    sam_vit_b_01ec64.pth is the flat state dict of segment_anything's ``Sam`` (segment_anything/build_sam.py
    loads it with ``torch.load`` + ``load_state_dict``); SAM 2.1's .pt holds it under ``"model"``
    (sam2/build_sam.py::_load_checkpoint). Fetched, read by the owner's builder with the checkpoint, and
    trained from at the study's size; a file of another encoder is refused naming it."""
    from medtl.segmentation.sam import build_sam
    from medtl.segmentation.spec import ENCODERS

    torch.manual_seed(0)
    if encoder == "vit_b":
        from segment_anything import sam_model_registry

        published = sam_model_registry["vit_b"]().state_dict()
        reference, name = published, "sam_vit_b_01ec64.pth"
    else:
        from sam2.build_sam import build_sam2

        reference = build_sam2(ENCODERS.get(encoder).config, None, device="cpu", apply_postprocessing=False).state_dict()
        published, name = {"model": reference}, "sam2.1_hiera_tiny.pt"
    data = _bytes(published)
    del published
    with serve() as server:
        entry = {"encoder": encoder, "img_size": 64, "weights": {"type": "release", "url": server.add(f"/{name}", data)}}
        fetch_release("segmentation", entry, str(tmp_path / "release.pt"), str(tmp_path / "cache"))
        other = {**entry, "encoder": "vit_l" if encoder == "vit_b" else "sam2.1_hiera_small"}
        with pytest.raises(ValueError, match=f"not a released checkpoint of '{other['encoder']}'"):
            fetch_release("segmentation", other, str(tmp_path / "other.pt"), str(tmp_path / "cache2"))
    assert not (tmp_path / "other.pt").exists()
    model = build_sam(encoder, 64, tmp_path / "release.pt")
    key = next(k for k in model.state_dict() if k.startswith("mask_decoder.") and k.endswith("weight"))
    official = "sam_mask_decoder." + key[len("mask_decoder."):] if encoder != "vit_b" else key
    torch.testing.assert_close(model.state_dict()[key], reference[official])
