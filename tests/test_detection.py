"""Detection: dense store and YOLO export, the SPFT stage schedule, and -- inside Ultralytics' own
training loop -- that each stage freezes exactly what it says for YOLOv8 and RT-DETR; resume;
the report; a short run on real NIH ChestX-ray14 boxes (skipped when ../shared/data is absent)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from dense_helpers import REPO, SHARED_DATA, prepare_from, synth_store
from medtl.data.dense_store import StoreError, load_dense_store, write_dense_store
from medtl.detection import offline
from medtl.staging import StageSchedule
from medtl.workflow.config import ConfigError
from medtl.workflow.dense_config import check_dense_config
from workflow_helpers import scheduled_jobs

NIH = SHARED_DATA / "nih_cxr14_bbox"


@pytest.fixture(scope="module", autouse=True)
def ultralytics_offline(tmp_path_factory):
    """Offline Ultralytics with its settings and fonts in a temp folder, before its first import."""
    offline.prepare(tmp_path_factory.mktemp("ultralytics"), threads=2)


@pytest.fixture(scope="module")
def det_data(tmp_path_factory):
    """(store, YOLO folder) of 32 synthetic radiographs at 64 px: 20 train / 5 val / 7 test."""
    from medtl.detection.export import export_yolo

    root = tmp_path_factory.mktemp("det")
    store = synth_store(root, "detection", n=32)
    return store, export_yolo(store.root, root / "yolo")


def hp(model="yolo", cfg="yolov8n.yaml", strategy="spft", settings=None, epochs=3, seed=0, **training):
    return {"dataset": {"name": "synth", "size": 64},
            "model": {"name": model, "type": model, "cfg": cfg, "weights": {"type": "none"}},
            "strategy": {"name": strategy, "type": strategy, "settings": settings or {}},
            "training": {"epochs": epochs, "batch_size": 4, "nbs": 4, "lr0": 0.002, "warmup_epochs": 0,
                         "workers": 0, "device": "cpu", "eval_batch_size": 16,
                         "augment": {"mosaic": 0.0, "close_mosaic": 0}, **training},
            "seed": seed}


# -- the store and the YOLO export --------------------------------------------------------------------
def test_detection_store_round_trip(tmp_path):
    images = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8, 1) * 3
    labels = pd.DataFrame({"index": [0, 1], "split": ["train", "test"], "group": ["a", "b"],
                           "image_id": ["x.png", "y.png"], "mass": [1, 0], "nodule": [1, 1]})
    boxes = pd.DataFrame({"index": [0, 0, 1], "class": ["mass", "nodule", "nodule"],
                          "x1": [0.0, 1.5, 2.0], "y1": [0.0, 1.0, 3.0], "x2": [4.0, 3.0, 8.0], "y2": [5.0, 2.5, 8.0]})

    def fill(out, masks):
        assert masks is None
        out[:] = images

    store = write_dense_store(tmp_path / "s", "detection", 2, 8, 1, fill, labels,
                              {"name": "t", "type": "t", "classes": ["mass", "nodule"]}, boxes)
    again = load_dense_store(tmp_path / "s", task="detection")
    assert np.array_equal(again.images, images)
    assert again.meta["counts"] == {"train": 1, "val": 0, "test": 1}
    assert again.meta["box_counts"] == {"mass": 1, "nodule": 2}
    xy, ids = again.boxes_of(0)
    assert xy.tolist() == [[0, 0, 4, 5], [1.5, 1, 3, 2.5]] and ids.tolist() == [0, 1]
    with pytest.raises(StoreError, match="a detection store, but a segmentation"):
        load_dense_store(tmp_path / "s", task="segmentation")
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("bad, message", [
    ({"x2": 9.0}, "outside the 8 px image"), ({"x2": 0.0}, "empty or outside"), ({"class": "cyst"}, "outside"),
])
def test_store_refuses_bad_boxes(tmp_path, bad, message):
    labels = pd.DataFrame({"index": [0], "split": ["train"], "group": [""], "image_id": ["x"], "mass": [1]})
    boxes = pd.DataFrame([{"index": 0, "class": "mass", "x1": 1.0, "y1": 1.0, "x2": 4.0, "y2": 4.0, **bad}])
    with pytest.raises(StoreError, match=message):
        write_dense_store(tmp_path / "s", "detection", 1, 8, 1, lambda i, m: None, labels,
                          {"name": "t", "type": "t", "classes": ["mass"]}, boxes)
    assert not (tmp_path / "s").exists()


def test_yolo_folder_letterboxes_image_and_boxes_together(tmp_path):
    """A 200 x 100 image with a bright 40 x 20 block, labelled in YOLO fractions: after letterboxing
    to 32 px the box sits exactly on the block, in the image's middle band."""
    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    img = np.zeros((100, 200), np.uint8)
    img[40:60, 100:140] = 255
    for i in range(5):
        Image.fromarray(img).save(root / "images" / f"p{i}_scan.png")
        (root / "labels" / f"p{i}_scan.txt").write_text("0 0.6 0.5 0.2 0.2\n")
    (root / "classes.txt").write_text("block\n")
    store = prepare_from(tmp_path, "detection", "yolo_folder",
                         {"root": str(root), "test_fraction": 0.4, "group_pattern": r"^(p\d+)_"}, size=32)
    xy, ids = store.boxes_of(0)
    # scale 32/200 = 0.16, height 16 px padded by 8 on top
    assert xy.tolist() == [[16.0, 14.4, 22.4, 17.6]] and ids.tolist() == [0]
    bright = np.argwhere(store.images[0, ..., 0] > 127)
    assert bright[:, 1].min() >= 16 and bright[:, 1].max() < 23 and bright[:, 0].min() >= 14 and bright[:, 0].max() < 18
    assert store.images[0, :7].max() == 0 and store.images[0, 25:].max() == 0  # the padding
    assert set(store.labels["group"]) == {f"p{i}" for i in range(5)}


def test_yolo_export_round_trip(det_data):
    from medtl.detection.export import DATA_YAML

    store, folder = det_data
    data = yaml.safe_load((folder / DATA_YAML).read_text())
    assert data["names"] == dict(enumerate(store.classes)) and Path(data["path"]) == folder
    for split in ("train", "val", "test"):
        files = sorted((folder / "images" / split).glob("*.png"))
        assert [int(f.stem) for f in files] == sorted(store.indices(split))
        assert (folder / "labels" / f"{split}.cache").exists()  # built once, by the export job
    index = int(store.indices("train")[0])
    lines = (folder / "labels" / "train" / f"{index:06d}.txt").read_text().split("\n")[:-1]
    xy, ids = store.boxes_of(index)
    back = np.array([[float(v) for v in line.split()[1:]] for line in lines]).reshape(-1, 4) * store.size
    expected = np.stack([(xy[:, 0] + xy[:, 2]) / 2, (xy[:, 1] + xy[:, 3]) / 2, xy[:, 2] - xy[:, 0],
                         xy[:, 3] - xy[:, 1]], axis=1)
    assert np.allclose(back, expected, atol=1e-3)
    assert [int(line.split()[0]) for line in lines] == ids.tolist()
    assert np.array_equal(np.asarray(Image.open(folder / "images" / "train" / f"{index:06d}.png")),
                          store.images[index, ..., 0])


# -- the stage schedule ------------------------------------------------------------------------------
def test_stage_schedule():
    """One schedule for every task (medtl.staging): the same settings give the same stages as classification's SPFT."""
    ft = StageSchedule.full()
    assert [ft.n_unfrozen(e, 5) for e in range(3)] == [5, 5, 5]
    spft = StageSchedule.from_settings({"head_epochs": 2, "top_k": 3, "unfreeze_every": 2})
    assert [spft.n_unfrozen(e, 5) for e in range(10)] == [0, 0, 1, 1, 2, 2, 3, 3, 3, 3]
    assert [spft.stage_name(e, 5) for e in (0, 2, 9)] == ["head", "head+top1", "head+top3"]
    everything = StageSchedule.from_settings({"head_epochs": 1, "top_k": "all"})
    assert [everything.n_unfrozen(e, 3) for e in range(5)] == [0, 1, 2, 3, 3]
    assert everything.stage_name(4, 3) == "full"
    at_once = StageSchedule.from_settings({"head_epochs": 1, "top_k": 2, "progressive": False})
    assert [at_once.n_unfrozen(e, 4) for e in range(3)] == [0, 2, 2]
    head_only = StageSchedule.from_settings({"head_epochs": 1, "top_k": 0})
    assert [head_only.n_unfrozen(e, 4) for e in range(3)] == [0, 0, 0]
    with pytest.raises(ValueError, match="top_k"):
        StageSchedule.from_settings({"top_k": -1})


def test_spft_settings_mean_the_same_in_every_task():
    """A setting SPFT has in several tasks is declared once: same type, same values allowed, same meaning."""
    from medtl.segmentation.strategies import SEGMENTATION_STRATEGIES
    from medtl.detection.strategies import DETECTION_STRATEGIES
    from medtl.staging import SHARED
    from medtl.strategies import STRATEGIES

    declarations = {"classification": STRATEGIES.get("spft").settings.declared,
                    "detection": DETECTION_STRATEGIES.get("spft").settings.declared,
                    "segmentation": SEGMENTATION_STRATEGIES.get("spft").settings.declared}
    for task, declared in declarations.items():
        for name, setting in declared.items():
            if name in SHARED:
                shared = SHARED[name](setting.default)
                ours, theirs = (type(setting), setting.doc, setting.allowed()), (type(shared), shared.doc,
                                                                                 shared.allowed())
                assert ours == theirs, f"{task}: {name}"
    common = set(declarations["classification"]) & set(declarations["detection"]) & set(declarations["segmentation"])
    assert {"head_epochs", "top_k", "unfreeze_every", "progressive", "ema", "ema_decay", "components_from"} <= common


@pytest.mark.parametrize("cfg, kind, units", [
    ("yolov8n.yaml", "yolo", [[0], [1, 2], [3, 4], [5, 6], [7, 8, 9]]),
    ("rtdetr-l.yaml", "rtdetr", [[0, 1], [2, 3], [4, 5, 6, 7], [8, 9]]),
    ("rtdetr-tiny.yaml", "rtdetr", [[0, 1], [2, 3], [4, 5], [6, 7]]),
])
def test_backbone_units_follow_the_stride_stages(cfg, kind, units):
    from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel

    from medtl.detection.models import backbone_units, resolve_cfg

    cls = RTDETRDetectionModel if kind == "rtdetr" else DetectionModel
    model = cls(resolve_cfg(cfg), nc=2, verbose=False)
    assert backbone_units(model) == units
    assert model.training  # left as it was found


# -- the stages inside Ultralytics' training loop ------------------------------------------------------
def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def layer_of(name: str) -> int:
    return int(name.split(".")[1])


def train_with_snapshots(det_data, tmp_path, **kwargs):
    """Train through medtl.detection.train.train; the state dict before and after every epoch."""
    from medtl.detection.train import train

    store, folder = det_data
    snaps: dict[int, dict] = {}

    def start(trainer):
        snaps[trainer.epoch] = {"before": snapshot(trainer.model),
                                "grad": {n: p.requires_grad for n, p in trainer.model.named_parameters()},
                                "ema_decay_100": trainer.ema.decay(100),
                                "class_weights": getattr(trainer.model, "class_weights", None)}

    def end(trainer):
        snaps[trainer.epoch]["after"] = snapshot(trainer.model)

    done = train(hp(**kwargs), str(folder), str(tmp_path / "ckpt"),
                 callbacks={"on_train_epoch_start": [start], "on_train_epoch_end": [end]})
    return done, snaps


@pytest.mark.parametrize("kind, cfg, n_backbone", [("yolo", "yolov8n.yaml", 10), ("rtdetr", "rtdetr-tiny.yaml", 8)])
def test_spft_stages_freeze_exactly_the_scheduled_backbone_units(kind, cfg, n_backbone, det_data, tmp_path):
    done, snaps = train_with_snapshots(det_data, tmp_path, model=kind, cfg=cfg, strategy="spft",
                                       settings={"head_epochs": 1, "top_k": 2, "unfreeze_every": 1}, epochs=3)
    stages = done["stages"]
    assert [s["stage"] for s in stages] == ["head", "head+top1", "head+top2"]
    units = {"yolo": [[0], [1, 2], [3, 4], [5, 6], [7, 8, 9]], "rtdetr": [[0, 1], [2, 3], [4, 5], [6, 7]]}[kind]
    expected_frozen = [sum(units, []), sum(units[:-1], []), sum(units[:-2], [])]
    assert [s["frozen_layers"] for s in stages] == expected_frozen
    counts = [s["trainable_params"] for s in stages]
    assert counts[0] < counts[1] < counts[2] < stages[0]["total_params"]
    for epoch, frozen in enumerate(expected_frozen):
        snap = snaps[epoch]
        before, after = snap["before"], snap["after"]
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        params = set(snap["grad"])
        # requires_grad is what the schedule says, for every parameter
        for name, trainable in snap["grad"].items():
            assert trainable == (layer_of(name) not in frozen and ".dfl" not in name), name
        # frozen layers: neither weights nor BatchNorm statistics moved
        moved = sorted(k for k in changed if k.startswith("model.") and layer_of(k) in frozen)
        assert not moved, f"epoch {epoch}: frozen layers changed: {moved[:5]}"
        # the head and every unfrozen backbone unit did train
        assert any(layer_of(k) >= n_backbone for k in changed & params)
        for unit in units[len(units) - (epoch):]:
            assert any(layer_of(k) in unit for k in changed & params), f"epoch {epoch}: unit {unit} did not train"
        assert not any(".dfl" in k for k in changed)
        # SPFT's EMA and class weights act from stage 2, as in classification: before, the EMA is the trained weights
        assert (snap["ema_decay_100"] > 0) == (epoch >= 1), epoch
    assert [s["components"] for s in stages] == [False, True, True]
    if kind == "yolo":  # class-aware weights where the loss reads them (YOLO's BCE), recorded as applied
        assert done["class_weights_applied"] and snaps[0]["class_weights"] is None
        assert math.isclose(float(snaps[1]["class_weights"].mean()), 1.0, rel_tol=1e-5)
    else:  # RT-DETR's loss has no class weights: not claimed
        assert not done["class_weights_applied"]


def test_ft_trains_every_layer_without_ema(det_data, tmp_path):
    done, snaps = train_with_snapshots(det_data, tmp_path, strategy="ft", epochs=1)
    snap = snaps[0]
    assert done["stages"][0]["stage"] == "full" and done["stages"][0]["frozen_layers"] == []
    assert all(t for n, t in snap["grad"].items() if ".dfl" not in n)
    changed = {k for k in snap["grad"] if not torch.equal(snap["before"][k], snap["after"][k])}
    with_params = {layer_of(k) for k in snap["grad"]}  # (upsampling and concatenation have none)
    assert {layer_of(k) for k in changed} == with_params  # every YOLOv8 layer with parameters trained...
    assert snap["ema_decay_100"] == 0.0  # ...and the evaluated weights are the trained ones
    assert not done["class_weights_applied"]


def test_training_starts_from_a_cached_checkpoint(det_data, tmp_path):
    """weights: {type: checkpoint}: a local Ultralytics checkpoint (here an 80-class COCO-shaped
    YOLOv8n) seeds every layer whose shape fits; the new 2-class head starts fresh."""
    from ultralytics.nn.tasks import DetectionModel

    from medtl.detection.train import train

    torch.manual_seed(1)
    source = DetectionModel("yolov8n.yaml", nc=80, verbose=False)
    torch.save({"model": source, "epoch": -1}, tmp_path / "cached.pt")
    first = {}

    def start(trainer):
        if trainer.epoch == 0:
            first.update(snapshot(trainer.model))

    store, folder = det_data
    train(hp(strategy="ft", epochs=1), str(folder), str(tmp_path / "ckpt"), weights_file=str(tmp_path / "cached.pt"),
          callbacks={"on_train_epoch_start": [start]})
    loaded = source.state_dict()
    backbone = [k for k in first if layer_of(k) < 10]
    assert backbone and all(torch.equal(first[k], loaded[k]) for k in backbone)
    head_cls = "model.22.cv3.0.2.weight"  # the class logits: 80 -> 2 outputs, cannot come from the checkpoint
    assert first[head_cls].shape[0] == 2 and loaded[head_cls].shape[0] == 80


def test_amp_never_on_cpu_and_bf16_on_gpu():
    """bf16 skips Ultralytics' AMP check (which downloads a model); on CPU AMP is simply off."""
    from medtl.detection.strategies import DETECTION_STRATEGIES
    from medtl.detection.train import trainer_args

    job = hp(strategy="spft")
    settings = DETECTION_STRATEGIES.get("spft").resolve({})
    cpu = trainer_args(job, settings, "data.yaml", Path("/tmp/x/train"), "cpu", None)
    gpu = trainer_args(job, settings, "data.yaml", Path("/tmp/x/train"), "0", None)
    assert cpu["amp"] is False and gpu["amp"] == "bf16"
    assert cpu["pretrained"] is False and cpu["plots"] is False and cpu["freeze"] is None
    assert cpu["cos_lr"] is True and cpu["cls_pw"] == 0.5
    rtdetr = trainer_args(hp(model="rtdetr", cfg="rtdetr-tiny.yaml"), settings, "d.yaml", Path("/t/train"), "cpu", None)
    assert rtdetr["cls_pw"] == 0.0 and rtdetr["model"].endswith("medtl/detection/cfg/rtdetr-tiny.yaml")


def comparable(result: dict) -> str:
    """A job's metrics without its wall time, as text: exact."""
    return json.dumps({k: v for k, v in result.items() if k != "seconds"}, sort_keys=True)


def test_killed_detection_job_resumes_as_an_uninterrupted_run(det_data, tmp_path, capfd):
    """Killed after its second epoch (in SPFT's stage 2: EMA and class weights on), the job resumes and ends
    with the uninterrupted run's metrics, history and predictions, exactly."""
    from medtl.detection.train import run

    store, folder = det_data
    job = hp(strategy="spft", settings={"head_epochs": 1, "top_k": 1, "ema_decay": 0.9}, epochs=3)

    def args(name):
        return (job, str(folder), str(store.root), str(tmp_path / name / "run"), str(tmp_path / name / "ckpt"),
                str(tmp_path / "cfg"))

    reference = run(*args("reference"))

    def kill(trainer):
        if trainer.epoch == 1:
            raise KeyboardInterrupt("killed after epoch 2")

    with pytest.raises(KeyboardInterrupt):
        run(*args("killed"), callbacks={"on_fit_epoch_end": [kill]})
    assert (tmp_path / "killed" / "ckpt" / "train" / "weights" / "last.pt").exists()
    assert not (tmp_path / "killed" / "run" / "metrics.json").exists()
    capfd.readouterr()
    result = run(*args("killed"))
    err = capfd.readouterr().err
    assert "resuming from" in err and "restored the exact state after epoch 2" in err
    assert result["epochs_run"] == 3 and [s["stage"] for s in result["stages"]] == ["head", "head+top1", "head+top1"]
    assert comparable(result) == comparable(reference)
    for name in ("history.csv", "predictions.csv"):
        a, b = (pd.read_csv(tmp_path / run_name / "run" / name) for run_name in ("killed", "reference"))
        pd.testing.assert_frame_equal(a.drop(columns=["time"], errors="ignore"),
                                      b.drop(columns=["time"], errors="ignore"), check_exact=True)
    for split in ("val", "test"):
        assert set(result[split]) == {"map50", "map50_95", "precision", "recall"}
        assert all(v is None or 0 <= v <= 1 for v in result[split].values())
        assert set(result["per_class"][split]) == set(store.classes)
    saved = json.loads((tmp_path / "killed" / "run" / "metrics.json").read_text())
    assert saved["test"] == result["test"] and saved["primary_metric"] == "map50_95"
    predictions = pd.read_csv(tmp_path / "killed" / "run" / "predictions.csv")
    assert list(predictions.columns) == ["index", "image_id", "class", "score", "x1", "y1", "x2", "y2"]
    assert set(predictions["index"]) <= set(store.indices("test"))
    assert not (tmp_path / "killed" / "ckpt").exists()  # a finished job leaves no checkpoint behind


# -- report -----------------------------------------------------------------------------------------
def test_detection_report_tables_and_figure(det_data, tmp_path):
    from medtl.detection.report import build_report

    store, _ = det_data
    values = {("yolo", "ft"): [0.30, 0.50], ("yolo", "spft"): [0.60, 0.70]}
    metric_files, prediction_files = [], []
    test_index = int(store.indices("test")[0])
    for (model, strategy), seeds in values.items():
        for seed, v in enumerate(seeds):
            d = tmp_path / "runs" / model / strategy / f"seed{seed}"
            d.mkdir(parents=True)
            scores = {"map50": v, "map50_95": v / 2, "precision": v, "recall": v}
            per = {c: {"map50": v, "map50_95": v / 2, "precision": v, "recall": v, "instances": 3}
                   for c in store.classes}
            (d / "metrics.json").write_text(json.dumps({
                "task": "detection", "dataset": "synth", "model": model, "strategy": strategy, "seed": seed,
                "val": scores, "test": scores, "per_class": {"test": per}}))
            pd.DataFrame([{"index": test_index, "image_id": "x", "class": store.classes[0], "score": 0.9,
                           "x1": 5, "y1": 5, "x2": 20, "y2": 20}]).to_csv(d / "predictions.csv", index=False)
            metric_files.append(str(d / "metrics.json"))
            prediction_files.append(str(d / "predictions.csv"))
    build_report(metric_files, prediction_files, {"synth": str(store.root)}, str(tmp_path / "report"),
                 model_order=["yolo"], strategy_order=["spft", "ft"])
    table = pd.read_csv(tmp_path / "report" / "detection_table.csv")
    assert list(table["Strategy"]) == ["spft", "ft"]
    assert table.loc[0, "mAP@50"] == "**0.650 ± 0.050**" and table.loc[1, "mAP@50"] == "0.400 ± 0.100"
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert summary.loc[1, "test_recall_mean"] == pytest.approx(0.4)
    assert (tmp_path / "report" / "per_class.md").exists()
    figure = Image.open(tmp_path / "report" / "figures" / "boxes_synth.png")
    assert figure.size[0] > 300 and figure.size[1] > 300
    assert "figures/boxes_synth.png" in (tmp_path / "report" / "report.md").read_text()


# -- config and workflow ---------------------------------------------------------------------------------
def test_schema_defaults_are_the_jobs_defaults():
    from medtl.detection.train import TRAINING_DEFAULTS

    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]["detection"]["properties"]["training"]["properties"]
    assert {k: v.get("default") for k, v in props.items()} == TRAINING_DEFAULTS


@pytest.mark.parametrize("section, fragment", [
    ({"datasets": {"d": {"type": "nope"}}}, "unknown dense dataset 'nope'"),
    ({"datasets": {"d": {"type": "mask_folder"}}}, "'mask_folder' has no detection annotations"),
    ({"models": {"m": {"type": "fasterrcnn"}}}, "unknown detector 'fasterrcnn'"),
    ({"models": {"m": {"type": "yolo", "training": {"epoch": 3}}}}, "detection.models.m.training.epoch: unknown setting"),
    ({"models": {"m": {"type": "yolo", "weights": {"type": "checkpoint"}}}}, "detection.models.m.weights (type checkpoint).path: required"),
    ({"models": {"m": {"type": "yolo", "weights": {"type": "release", "epochs": 3}}}},
     "detection.models.m.weights.epochs: not a setting of weights type 'release' (only of pretrain)"),
    ({"strategies": {"spft": {"head_epoch": 1}}}, "detection.strategies.spft.head_epoch: unknown setting (did you mean 'head_epochs'?)"),
    ({"strategies": {"s": {"type": "lp"}}}, "unknown strategy 'lp'"),
    ({"strategies": {"spft": {"top_k": -2}}}, "detection.strategies.spft.top_k: -2 is not allowed"),
    ({"strategies": {"spft": {"ema": "no"}}}, "detection.strategies.spft.ema: 'no' is not allowed; expected true or false"),
    ({"models": {"m": {"type": "yolo", "training": {"lr0": -1}}}}, "detection.models.m.training.lr0: -1"),
    ({"report": {"n_images": 4.0}}, "detection.report.n_images: 4.0 is not allowed; expected an integer >= 1"),
])
def test_config_errors_are_named(section, fragment):
    base = {"datasets": {"synth_cxr_dense": {}}, "models": {"yolo": {}}, "strategies": {"ft": {}}}
    with pytest.raises(ConfigError) as err:
        check_dense_config({"detection": {**base, **section}})
    assert fragment in str(err.value)


@pytest.mark.slow
def test_default_config_schedules_detection_and_segmentation(tmp_path):
    """The embedded config.yaml: 2 detectors x 2 strategies x 1 seed and 1 SAM x 2 x 1, one report each, each
    model pretrained once; without the two sections the same config schedules no dense job."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    jobs = [rule for rule, _ in scheduled_jobs(tmp_path, path)]
    counts = {r: jobs.count(r) for r in set(jobs)}
    assert counts["train_detection"] == 4 and counts["train_segmentation"] == 2
    assert counts["report_detection"] == counts["report_segmentation"] == 1
    # every dense model starts from weights pretrained on the synthetic source domain (one job per model),
    # whose data is fetched and prepared per task, and exported for the detectors
    assert counts["pretrain_detector"] == 2 and counts["pretrain_sam"] == 1
    assert counts["export_yolo_dataset"] == 2 and counts["fetch_dense_dataset"] == 4
    assert "fetch_dense_weights" not in counts  # nothing is downloaded
    del config["detection"], config["segmentation"]
    path.write_text(yaml.safe_dump(config))
    rules = {rule for rule, _ in scheduled_jobs(tmp_path, path)}
    assert not rules & {"train_detection", "train_segmentation", "fetch_dense_dataset", "report_detection",
                        "pretrain_detector", "pretrain_sam"}


# -- real data ----------------------------------------------------------------------------------------
@pytest.mark.realdata
@pytest.mark.parametrize("kind, cfg", [("yolo", "yolov8n.yaml"), ("rtdetr", "rtdetr-tiny.yaml")])
def test_nih_chestxray14_boxes_train_and_evaluate(kind, cfg, tmp_path):
    """48 of the 880 NIH ChestX-ray14 images with official boxes, through yolo_folder at 64 px: one
    epoch of each detector and its evaluation on real radiographs."""
    if not NIH.is_dir():
        pytest.skip(f"{NIH} is absent")
    from medtl.detection.export import export_yolo
    from medtl.detection.train import run

    options = {"root": str(NIH / "thumb256"), "classes_file": "../classes.txt", "limit": 48,
               "test_fraction": 0.25, "group_pattern": r"^(\d+)_"}
    store = prepare_from(tmp_path, "detection", "yolo_folder", options, size=64, name="nih")
    classes = (NIH / "classes.txt").read_text().split()
    assert store.classes == classes and len(store.images) == 48 and store.images.shape[-1] == 1
    lines = sum(len((NIH / "thumb256" / "labels" / Path(i).with_suffix(".txt")).read_text().split("\n")) - 1
                for i in store.labels["image_id"])
    assert len(store.boxes) == lines  # every box of the subset, none lost at 64 px
    patients = store.labels.groupby("group")["split"].nunique()
    assert (patients == 1).all()  # a patient's images stay in one split
    folder = export_yolo(store.root, tmp_path / "yolo")
    job = hp(model=kind, cfg=cfg, epochs=1, strategy="spft", settings={"head_epochs": 1})
    job["dataset"]["name"] = "nih"
    result = run(job, str(folder), str(store.root), str(tmp_path / "run"), str(tmp_path / "ckpt"), str(tmp_path))
    assert [s["stage"] for s in result["stages"]] == ["head"]
    assert all(v is None or 0 <= v <= 1 for v in result["test"].values())
    assert set(result["per_class"]["test"]) == set(classes)
    assert (tmp_path / "run" / "predictions.csv").exists()
    print(f"NIH ChestX-ray14 (48 images, 64 px, {cfg} from scratch, 1 epoch): test", result["test"])


# -- released checkpoints, as Ultralytics writes them ---------------------------------------------------------
@pytest.mark.parametrize("kind, cfg", [("yolo", "yolov8n.yaml"), ("rtdetr", "rtdetr-tiny.yaml")])
def test_release_checkpoints_written_by_ultralytics_train_through_detection(kind, cfg, det_data, tmp_path):
    """A release .pt in its real layout: a trained run's checkpoint finalised by Ultralytics' own
    ``strip_optimizer``, as every release asset is (``model`` in half precision, ``ema`` None, ``train_args``,
    ``date``/``version``/``license``: ultralytics/utils/torch_utils.py::strip_optimizer). Fetched by the local
    rule's function (served over HTTP), checked by Ultralytics' own loader, then the starting weights of a
    detection job with weights {type: release}."""
    from ultralytics.utils.torch_utils import strip_optimizer

    from data_server import serve
    from medtl.dense_weights import fetch_release
    from medtl.detection.train import train

    store, folder = det_data
    run = train(hp(model=kind, cfg=cfg, strategy="ft", epochs=1), str(folder), str(tmp_path / "source"))
    name = Path(cfg).stem + ".pt"
    released = strip_optimizer(run["weights"], str(tmp_path / name))
    assert released["ema"] is None and released["epoch"] == -1 and "train_args" in released
    assert next(released["model"].parameters()).dtype == torch.float16

    with serve() as server:
        entry = {"type": kind, "cfg": cfg, "weights": {"type": "release", "url": server.add(f"/assets/{name}",
                                                                                        (tmp_path / name).read_bytes())}}
        fetch_release("detection", entry, str(tmp_path / "release.pt"), str(tmp_path / "cache"))
    first = {}

    def start(trainer):
        if trainer.epoch == 0:
            first.update(snapshot(trainer.model))

    train({**hp(model=kind, cfg=cfg, strategy="ft", epochs=1), "model": {"name": kind, **entry}}, str(folder),
          str(tmp_path / "ckpt"), weights_file=str(tmp_path / "release.pt"), callbacks={"on_train_epoch_start": [start]})
    loaded = {k: v.float() for k, v in released["model"].state_dict().items()}
    floating = [k for k in first if first[k].is_floating_point()]
    assert all(k in loaded and first[k].shape == loaded[k].shape for k in floating)  # the same classes
    assert all(torch.equal(first[k], loaded[k]) for k in floating)  # every layer starts from the release
