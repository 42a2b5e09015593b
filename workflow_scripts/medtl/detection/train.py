"""One detection job: (dataset, model, strategy, seed) -> metrics, predictions, history.

Training is Ultralytics' own loop; the strategy acts through trainer arguments and the
callbacks of ``medtl.detection.stages``. The job is resumable: Ultralytics writes
``last.pt`` (weights, optimizer, EMA, epoch) after every epoch into the checkpoint folder,
and a restarted job resumes from it when it was written with the same settings (a
signature of the job's config slice), or starts over when not. Once training has finished,
a marker lets a job killed during evaluation go straight back to evaluating.

Evaluation uses the weights Ultralytics keeps as best (highest validation mAP@50-95; EMA
weights for SPFT): mAP@50, mAP@50-95, precision and recall on val and test, overall and per
class, and the test predictions, in prepared-image pixels.
"""
from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.dense_store import load_dense_store
from medtl.detection import offline
from medtl.detection.export import DATA_YAML, index_of
from medtl.detection.models import DETECTORS, TRAINING, resolve_cfg
from medtl.detection.stages import StageController
from medtl.detection.strategies import DETECTION_STRATEGIES
from medtl.fit import Checkpointer
from medtl.io import atomic_path, read_json, write_json
from medtl.models.weights_declaration import DENSE_WEIGHTS, weights_settings
from medtl.runtime import signature

METRICS = ("map50", "map50_95", "precision", "recall")
# what a job uses for a training setting its config slice leaves out: the declaration's defaults
TRAINING_DEFAULTS = TRAINING
PRIMARY = "map50_95"
TRAINED = "trained.json"  # in the checkpoint folder: training is over, only evaluation is left
EXACT = "exact.pt"  # in the checkpoint folder: the last epoch's full-precision state (medtl.detection.stages)


def trainer_args(hp: dict, settings: dict, data_yaml: str, save_dir: Path, device: str,
                 weights_file: str | None) -> dict:
    """Ultralytics trainer arguments for this job (everything explicit: no library default decides a result)."""
    spec = DETECTORS.get(hp["model"]["type"])
    t = TRAINING.unkey(hp["training"])  # a job key leaves out settings at their neutral value
    on_gpu = device != "cpu"
    return {
        "model": resolve_cfg(hp["model"]["cfg"] or spec.default_cfg),
        "pretrained": weights_file or False,   # False: the YAML's random init; never a download
        "data": data_yaml,
        "epochs": int(t["epochs"]), "batch": int(t["batch_size"]),
        "imgsz": int(t.get("imgsz") or hp["dataset"]["size"]),
        "optimizer": t["optimizer"], "lr0": float(t["lr0"]), "lrf": float(t["lrf"]),
        "momentum": float(t["momentum"]), "weight_decay": float(t["weight_decay"]),
        "warmup_epochs": float(t["warmup_epochs"]), "nbs": int(t["nbs"]), "patience": int(t["patience"]),
        "cos_lr": bool(settings["cos_lr"]),
        # class-aware weighting only where the loss reads it (see medtl.detection.strategies); the stage
        # callbacks switch it off before SPFT's stage 2
        "cls_pw": float(settings["class_weights_power"]) if spec.class_weights and settings["class_weights"] else 0.0,
        "seed": int(hp["seed"]), "deterministic": bool(t["deterministic"]),
        "device": device, "workers": int(t["workers"]),
        # bf16 on GPU skips the AMP check (which would download a model); never AMP on CPU
        "amp": "bf16" if (on_gpu and t["amp"]) else False,
        "project": str(save_dir.parent), "name": save_dir.name, "exist_ok": True,
        "plots": False, "val": True, "save": True, "save_period": -1, "cache": False, "verbose": True,
        "freeze": None,  # the stage callbacks own freezing
        **t.get("augment", {}),
    }


def _resume_point(last: Path, epochs: int) -> str:
    """'resume', 'finished' or 'none' for a last.pt left by an earlier attempt."""
    import torch

    if not last.exists():
        return "none"
    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated by a kill mid-write: start over rather than fail
        print(f"[detection] ignoring unreadable checkpoint {last}: {err}", file=sys.stderr, flush=True)
        return "none"
    epoch = int(ckpt.get("epoch", -1))
    if epoch < 0 or ckpt.get("optimizer") is None or epoch + 1 >= epochs:
        return "finished"  # Ultralytics strips the optimizer (epoch -1) once training is over
    return "resume"


def train(hp: dict, data_dir: str, checkpoint_dir: str, weights_file: str | None = None,
          callbacks: dict | None = None) -> dict:
    """Train (or resume, or skip when done); return what the trainer left: best weights, history, stages."""
    spec = DETECTORS.get(hp["model"]["type"])
    strategy = DETECTION_STRATEGIES.get(hp["strategy"]["type"])
    settings = strategy.resolve(strategy.settings.unkey(hp["strategy"]["settings"]),
                                where=f"strategy '{hp['strategy']['name']}'")
    schedule = strategy.schedule(settings)
    # absolute: Ultralytics puts a relative project folder under its own runs directory
    ckpt = Path(checkpoint_dir).resolve()
    save_dir = ckpt / "train"
    last, best = save_dir / "weights" / "last.pt", save_dir / "weights" / "best.pt"
    sig, sig_file, done_file = signature(hp), ckpt / "signature.txt", ckpt / TRAINED
    if ckpt.exists() and (not sig_file.exists() or sig_file.read_text().strip() != sig):
        print(f"[detection] {ckpt} holds another job's state; starting over", file=sys.stderr, flush=True)
        shutil.rmtree(ckpt)
    if done_file.exists():
        print("[detection] training already finished; evaluating", file=sys.stderr, flush=True)
        return read_json(done_file)
    ckpt.mkdir(parents=True, exist_ok=True)
    sig_file.write_text(sig + "\n")
    device = offline.device_arg(hp["training"].get("device", TRAINING_DEFAULTS["device"]))
    args = trainer_args(hp, settings, str(Path(data_dir).resolve() / DATA_YAML), save_dir, device, weights_file)
    point = _resume_point(last, args["epochs"])
    # every epoch, as Ultralytics writes last.pt: a resume needs the state of the epoch last.pt holds
    state = Checkpointer(ckpt / EXACT, sig, 0.0, "[detection]")
    controller = StageController(schedule, settings, lambda epoch: strategy.components_active(settings, epoch),
                                 seed=int(hp["seed"]), record_file=ckpt / "stages.json", state=state)
    if point != "finished":
        if point == "resume":
            print(f"[detection] resuming from {last}", file=sys.stderr, flush=True)
            args = {**args, "resume": str(last)}
        elif save_dir.exists():
            shutil.rmtree(save_dir)  # a start that never saved an epoch
            controller.records.clear()
            state.remove()
        trainer = spec.trainer_class()(overrides=args)
        controller.attach(trainer)
        for event, fns in (callbacks or {}).items():
            for fn in fns:
                trainer.add_callback(event, fn)
        trainer.train()
        best_epoch = int(getattr(trainer.stopper, "best_epoch", 0)) - 1
    else:
        best_epoch = -1
    history = _history(save_dir / "results.csv", controller.history())
    if best_epoch < 0 and len(history) and f"val_{PRIMARY}" in history:
        best_epoch = int(history[f"val_{PRIMARY}"].to_numpy().argmax())
    done = {"weights": str(best if best.exists() else last), "best_epoch": best_epoch,
            "epochs_run": int(len(history)), "history": history.to_dict("records"), "stages": controller.history(),
            "settings": settings, "device": device,
            "class_weights_applied": bool(spec.class_weights and settings["class_weights"])}
    write_json(done_file, done)
    return done


RESULT_COLUMNS = {"metrics/mAP50(B)": "val_map50", "metrics/mAP50-95(B)": "val_map50_95",
                  "metrics/precision(B)": "val_precision", "metrics/recall(B)": "val_recall"}


def _history(results_csv: Path, stages: list[dict]) -> pd.DataFrame:
    """Ultralytics' per-epoch results merged with the stage each epoch ran in (epoch 0-based)."""
    if results_csv.exists():
        res = pd.read_csv(results_csv)
        res.columns = [c.strip() for c in res.columns]
        res = res.drop_duplicates("epoch", keep="last")  # a resumed epoch may appear twice
        res = res.rename(columns=RESULT_COLUMNS)
        res["epoch"] = res["epoch"].astype(int) - 1
    else:
        res = pd.DataFrame({"epoch": []})
    st = pd.DataFrame(stages or [], columns=["epoch", "stage", "units_unfrozen", "trainable_params"])
    st = st[["epoch", "stage", "units_unfrozen", "trainable_params"]]
    return res.merge(st, on="epoch", how="left") if len(res) else st


def _clean(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def evaluate(hp: dict, model, data_dir: str, classes: list[str], work_dir: Path, device: str) -> dict:
    """Validator metrics of ``model`` (an Ultralytics model object) on val and test: overall and per class."""
    t = TRAINING.unkey(hp["training"])  # a job key leaves out settings at their neutral value
    out = {"val": {}, "test": {}, "per_class": {}}
    for split in ("val", "test"):
        m = model.val(data=str(Path(data_dir).resolve() / DATA_YAML), split=split,
                      imgsz=int(t.get("imgsz") or hp["dataset"]["size"]), batch=int(t["eval_batch_size"]),
                      device=device, workers=int(t["workers"]), plots=False, verbose=False,
                      project=str(work_dir), name=f"eval_{split}", exist_ok=True, conf=0.001)
        box = m.box
        out[split] = {"map50": _clean(box.map50), "map50_95": _clean(box.map), "precision": _clean(box.mp),
                      "recall": _clean(box.mr)}
        nt = m.nt_per_class if m.nt_per_class is not None else np.zeros(len(classes), int)
        per = {c: {"map50": None, "map50_95": None, "precision": None, "recall": None,
                   "instances": int(nt[i]) if i < len(nt) else 0} for i, c in enumerate(classes)}
        for i, c in enumerate(box.ap_class_index):
            p, r, ap50, ap = box.class_result(i)
            per[classes[int(c)]].update(map50=_clean(ap50), map50_95=_clean(ap), precision=_clean(p), recall=_clean(r))
        out["per_class"][split] = per
    return out


def predict(hp: dict, model, data_dir: str, store, device: str) -> pd.DataFrame:
    """Test-set detections above ``predict_conf``, one row per box, in prepared-image pixels."""
    t = TRAINING.unkey(hp["training"])  # a job key leaves out settings at their neutral value
    files = sorted((Path(data_dir) / "images" / "test").glob("*.png"))
    rows = []
    for start in range(0, len(files), int(t["eval_batch_size"])):
        chunk = [str(f) for f in files[start:start + int(t["eval_batch_size"])]]
        for r in model.predict(chunk, imgsz=int(t.get("imgsz") or hp["dataset"]["size"]),
                               conf=float(t["predict_conf"]), device=device, verbose=False):
            index = index_of(r.path)
            xyxy = r.boxes.xyxy.cpu().numpy()
            for (x1, y1, x2, y2), score, c in zip(xyxy, r.boxes.conf.cpu().numpy(), r.boxes.cls.cpu().numpy()):
                rows.append({"index": index, "image_id": store.image_id(index), "class": store.classes[int(c)],
                             "score": round(float(score), 5), "x1": round(float(x1), 2), "y1": round(float(y1), 2),
                             "x2": round(float(x2), 2), "y2": round(float(y2), 2)})
    return pd.DataFrame(rows, columns=["index", "image_id", "class", "score", "x1", "y1", "x2", "y2"])


def run(hp: dict, data_dir: str, store_dir: str, out_dir: str, checkpoint_dir: str, config_dir: str,
        weights_file: str | None = None, threads: int = 1, callbacks: dict | None = None,
        keep_checkpoint: bool = False) -> dict:
    """Train, evaluate, predict; write metrics.json (last), predictions.csv, history.csv, hparams.json."""
    offline.prepare(config_dir, threads)
    started = time.monotonic()
    store = load_dense_store(store_dir, task="detection")
    print(f"[detection] {hp['dataset']['name']} {hp['model']['name']} {hp['strategy']['name']} seed={hp['seed']}: "
          f"{store.meta['counts']} images, classes {store.classes}", file=sys.stderr, flush=True)
    done = train(hp, data_dir, checkpoint_dir, weights_file, callbacks)
    ckpt = Path(checkpoint_dir).resolve()
    model = DETECTORS.get(hp["model"]["type"]).model_class()(done["weights"])
    scores = evaluate(hp, model, data_dir, store.classes, ckpt / "eval", done["device"])
    predictions = predict(hp, model, data_dir, store, done["device"])
    result = {**scores, "task": "detection", "dataset": hp["dataset"]["name"], "model": hp["model"]["name"],
              "strategy": hp["strategy"]["name"], "seed": int(hp["seed"]), "primary_metric": PRIMARY,
              "classes": store.classes, "best_epoch": done["best_epoch"], "epochs_run": done["epochs_run"],
              "stages": done["stages"], "class_weights_applied": done["class_weights_applied"],
              "device": done["device"], "seconds": round(time.monotonic() - started, 2)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False)
    with atomic_path(out / "history.csv") as tmp:
        pd.DataFrame(done["history"]).to_csv(tmp, index=False)
    import ultralytics

    write_json(out / "hparams.json", {**hp, "strategy_resolved": done["settings"], "signature": signature(hp),
                                      "ultralytics": ultralytics.__version__, "device": done["device"]})
    write_json(out / "metrics.json", result)  # last: its presence marks a finished job
    if not keep_checkpoint:
        shutil.rmtree(ckpt, ignore_errors=True)
    test = result["test"]
    print(f"[detection] done in {result['seconds']} s: test mAP@50 {test['map50']}, mAP@50-95 {test['map50_95']}",
          file=sys.stderr, flush=True)
    return result


def pretrain(model: dict, weights: dict, training: dict, dataset: dict, data_dir: str, out: str,
             checkpoint_dir: str, config_dir: str, threads: int = 1) -> dict:
    """Pretrain a detector on a source dataset's YOLO folder (the offline stand-in for COCO): every layer
    from the YAML's random weights, plain fine-tuning, Ultralytics' own loop; ``out`` gets the checkpoint
    Ultralytics keeps as best, which a detection job loads as ``pretrained`` weights (every layer whose
    shape fits: all but the class outputs, when the target has other classes).

    ``model`` is the ``detection.models`` entry (type, cfg), ``weights`` its ``{type: pretrain, dataset,
    epochs, lr, batch_size, seed}``, ``training`` the task's training settings with the model's own over
    them (what ``weights`` leaves out), ``dataset`` the source's name and prepared size."""
    offline.prepare(config_dir, threads)
    weights = weights_settings({**weights, "type": "pretrain"}, DENSE_WEIGHTS)  # the declared defaults
    t = {**training, "epochs": int(weights["epochs"])}
    if weights["lr"] is not None:
        t["lr0"] = float(weights["lr"])
    if weights["batch_size"] is not None:
        t["batch_size"] = int(weights["batch_size"])
    hp = {"dataset": dataset, "model": {**model, "weights": {"type": "none"}},
          "strategy": {"name": "ft", "type": "ft", "settings": {}}, "training": t,
          "seed": int(weights["seed"]), "pretrain": True}
    print(f"[detection] pretraining {model.get('cfg') or model['type']} on {dataset['name']} for {t['epochs']} "
          "epochs", file=sys.stderr, flush=True)
    done = train(hp, data_dir, checkpoint_dir)
    with atomic_path(out) as tmp:
        shutil.copyfile(done["weights"], tmp)
    shutil.rmtree(Path(checkpoint_dir).resolve(), ignore_errors=True)
    scores = [h.get(f"val_{PRIMARY}") for h in done["history"]]
    print(f"[detection] pretrained: val mAP@50-95 per epoch {scores}; kept epoch {done['best_epoch'] + 1}",
          file=sys.stderr, flush=True)
    return done
