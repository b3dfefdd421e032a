# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The bundles' README commands through the real ``python -m monai.bundle`` CLI, on generated data, CPU-sized.

What each run produces is checked: a checkpoint whose weights changed, the checkpoint with the lowest validation loss
kept as ``models/model.pt``, a per-case metrics CSV with a row per validation case and class, label maps in the input
space, a resumed run after an interruption, two CPU processes (torchrun, gloo), and failures at start.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import monai
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from bundle_utils import BRATS, KITS, cli_args, make_data, overrides, run_bundle
from monai.bundle import ConfigParser

pytestmark = pytest.mark.slow

TRAIN = ["run", "training", "--meta_file", "configs/metadata.json", "--config_file", "configs/train.json"]
EVALUATE = ["run", "--config_file", "['configs/train.json','configs/evaluate.json']"]
INFER = ["run", "--config_file", "configs/inference.json"]
VAL_LOSS = re.compile(r"Epoch\[(\d+)\] Metrics -- val_loss: ([0-9.]+)")


@pytest.fixture(scope="module")
def kits_data(tmp_path_factory) -> Path:
    return make_data("kits19", tmp_path_factory.mktemp("kits"), cases=6)


def _initial_weights(bundle: Path, values: dict) -> dict[str, torch.Tensor]:
    """The network as the bundle creates it (seed 0) before any training."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.update({"network_def#features": values["network_def#features"]})
    monai.utils.set_determinism(seed=0)
    weights = parser.get_parsed_content("network_def").state_dict()
    monai.utils.set_determinism(seed=None)
    return weights


def _val_loss_of(bundle: Path, values: dict, checkpoint: Path) -> float:
    """The validation loss of a checkpoint, computed here with the bundle's own validation evaluator."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.update({**values, "validate#handlers": []})
    network = parser.get_parsed_content("network")
    network.load_state_dict(torch.load(checkpoint, weights_only=True))
    evaluator = parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    return evaluator.state.metrics["val_loss"]


def test_kits19_train_evaluate_infer(kits_data: Path, tmp_path: Path) -> None:
    values = overrides("kits19", dataset_dir=str(kits_data), bundle_root=str(tmp_path))
    started = time.monotonic()
    # the compiled fused loss kernels, as at the paper's patch size, on the MetaTensors of MONAI's transforms
    fused = {"MONAI_MIXEDFOCAL_FUSED": "compile"}
    proc = run_bundle(KITS, [*TRAIN, *cli_args({**values, "epochs": 3, "iterations_per_epoch": 3})], env=fused)
    train_s = time.monotonic() - started
    out = proc.stdout
    assert "compiling the fused loss kernels" in out + proc.stderr and "torch.compile failed" not in proc.stderr
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == ["model.pt"]  # MONAI Label offers every models/*.pt

    # model.pt is a plain state dict whose weights moved away from the initial ones
    best = torch.load(models / "model.pt", map_location="cpu", weights_only=True)  # saved from the GPU, if any
    initial = _initial_weights(KITS, values)
    assert best.keys() == initial.keys()
    assert any(not torch.equal(best[k], initial[k]) for k in initial if k.endswith("conv.weight"))

    # ... and it is the checkpoint with the lowest validation loss of the run
    losses = {int(epoch): float(loss) for epoch, loss in VAL_LOSS.findall(out)}
    assert sorted(losses) == [1, 2, 3], out[-3000:]
    assert _val_loss_of(KITS, values, models / "model.pt") == pytest.approx(min(losses.values()), abs=1e-4)
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert last["trainer"]["iteration"] == 9 and last["trainer"]["max_epochs"] == 3
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "eval").iterdir())  # TensorBoard

    # evaluating another fold of the same data would score the model on its training cases: refused at start
    refused = run_bundle(KITS, [*EVALUATE, *cli_args({**values, "fold": 1})], check=False)
    assert refused.returncode != 0 and "are training cases of the model in this bundle_root" in refused.stderr
    # ... however the data set is named: the repository's data/ folder lists the same files
    as_data = {**values, "fold": 1, "dataset_dir": str(kits_data / "data")}
    refused = run_bundle(KITS, [*EVALUATE, *cli_args(as_data)], check=False)
    assert refused.returncode != 0 and "are training cases of the model in this bundle_root" in refused.stderr
    assert not (tmp_path / "eval" / "per_case_metrics.csv").exists()
    run_bundle(KITS, [*EVALUATE, *cli_args({**values, "save_predictions": "true"})])  # lowercase, as fire passes it
    table = pd.read_csv(tmp_path / "eval" / "per_case_metrics.csv")
    val_cases = sorted(c["case"] for c in _split(values)[1])
    assert sorted(table["case"].unique()) == val_cases
    assert len(table) == 2 * len(val_cases) and set(table["class"]) == {"kidney", "tumor"}
    assert table[["dsc", "precision", "recall", "iou"]].dropna().apply(lambda c: c.between(0, 1).all()).all()
    label = nib.load(kits_data / "data" / val_cases[0] / "segmentation.nii.gz")
    kidney = table[(table["case"] == val_cases[0]) & (table["class"] == "kidney")].iloc[0]
    assert kidney["label_voxels"] == int((np.asarray(label.dataobj) == 1).sum())  # counted in the original space
    assert (tmp_path / "eval" / "per_class_summary.csv").is_file() and (tmp_path / "eval" / "metrics.csv").is_file()
    # every count is the saved prediction's against the label file's, class by class
    saved = np.asarray(nib.load(tmp_path / "eval" / "data" / val_cases[0] / "imaging_seg.nii.gz").dataobj)
    truth = np.asarray(label.dataobj)
    for index, name in ((1, "kidney"), (2, "tumor")):
        row = table[(table["case"] == val_cases[0]) & (table["class"] == name)].iloc[0]
        pred_c, true_c = saved == index, truth == index
        expected = [(pred_c & true_c).sum(), (pred_c & ~true_c).sum(), (~pred_c & true_c).sum()]
        assert row[["tp", "fp", "fn"]].tolist() == expected, name

    run_bundle(KITS, [*INFER, *cli_args({**_infer(values), "output_dir": str(tmp_path / "infer")})])
    outputs = sorted((tmp_path / "infer").rglob("imaging_seg.nii.gz"))
    assert len(outputs) == 6  # one per case, none overwritten
    image = nib.load(kits_data / "data" / "case_00000" / "imaging.nii.gz")
    seg = nib.load(tmp_path / "infer" / "data" / "case_00000" / "imaging_seg.nii.gz")
    assert seg.shape == image.shape and np.allclose(seg.affine, image.affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2}
    # a user's own file, outside dataset_dir: its label map lands in output_dir, not beside the file
    own = tmp_path / "user" / "sub" / "patient_ct.nii.gz"
    own.parent.mkdir(parents=True)
    shutil.copy(kits_data / "data" / "case_00000" / "imaging.nii.gz", own)
    run_bundle(
        KITS, [*INFER, *cli_args({**_infer(values), "datalist": [str(own)], "output_dir": str(tmp_path / "own")})]
    )
    assert [p.relative_to(tmp_path / "own") for p in (tmp_path / "own").rglob("*.nii.gz")] == [
        Path("sub/patient_ct_seg.nii.gz")
    ]
    assert list(own.parent.iterdir()) == [own]
    assert np.array_equal(nib.load(tmp_path / "own" / "sub" / "patient_ct_seg.nii.gz").dataobj, seg.dataobj)
    print(f"kits19 CLI training, 3 epochs x 3 iterations: {train_s:.0f} s")


def _split(values: dict) -> tuple[list, list]:
    parser = ConfigParser()
    parser.read_config(str(KITS / "configs" / "train.json"))
    parser.update(values)
    return parser.get_parsed_content("datasplit")


def _infer(values: dict) -> dict:
    keys = ("dataset_dir", "bundle_root", "patch_size", "num_workers", "sw_batch_size", "network_def#features")
    return {k: values[k] for k in keys}


def test_brats20_with_a_target_loss(tmp_path: Path) -> None:
    data = make_data("brats20", tmp_path / "data", cases=6)
    values = overrides("brats20", dataset_dir=str(data), bundle_root=str(tmp_path / "run"))
    loss = {"_target_": "monai.losses.DiceCELoss", "softmax": True, "to_onehot_y": True}
    train = {**values, "loss": loss, "epochs": 1, "iterations_per_epoch": 2, "keep_freed_memory": "false"}
    out = run_bundle(BRATS, [*TRAIN, *cli_args(train)])
    assert "'loss': 'DiceCELoss'" in out.stdout + out.stderr
    assert "glibc keeps freed blocks" not in out.stdout + out.stderr  # "false" as fire passes it is off
    run_bundle(BRATS, [*EVALUATE, *cli_args(values)])
    table = pd.read_csv(tmp_path / "run" / "eval" / "per_case_metrics.csv")
    assert len(table) == 2 and set(table["class"]) == {"enhancing tumor"}  # 2 validation cases of 6 in 3 folds
    assert (tmp_path / "run" / "labels_et").is_dir()  # binary masks written beside the run, not in the data
    run_bundle(BRATS, [*INFER, *cli_args({**_infer(values), "output_dir": str(tmp_path / "infer")})])
    assert len(sorted((tmp_path / "infer").rglob("*_t1ce_seg.nii.gz"))) == 6


def test_a_sigmoid_loss_trains_by_name(kits_data: Path, tmp_path: Path) -> None:
    """``--loss sigmoid_focal`` trains although the bundle passes ``softmax=True`` (read as ``sigmoid`` for it)."""
    values = overrides("kits19", dataset_dir=str(kits_data), bundle_root=str(tmp_path), epochs=1)
    out = run_bundle(KITS, [*TRAIN, *cli_args({**values, "loss": "sigmoid_focal", "iterations_per_epoch": 2})])
    losses = [float(value) for _, value in VAL_LOSS.findall(out.stdout + out.stderr)]
    assert len(losses) == 1 and np.isfinite(losses[0])
    assert (tmp_path / "models" / "model.pt").is_file()


def _crash_after_the_first_checkpoint(values: dict) -> int:
    """Start a training and kill it (a crash, not a clean stop) once ``checkpoints/last.pt`` exists; the number of
    epochs that checkpoint holds (``values`` has 2 iterations per epoch)."""
    args = [sys.executable, "-m", "monai.bundle", *TRAIN, *cli_args(values)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    last = Path(str(values["bundle_root"])) / "checkpoints" / "last.pt"
    proc = subprocess.Popen(args, cwd=KITS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert last.exists(), "no checkpoint after the first epoch"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    done = torch.load(last, weights_only=True)["trainer"]["iteration"] // 2
    assert 1 <= done < int(values["epochs"])
    return done


@pytest.mark.parametrize("workers", [0, 1], ids=["no-workers", "one-worker"])
def test_a_resumed_run_trains_as_the_uninterrupted_one(kits_data: Path, tmp_path: Path, workers: int) -> None:
    """Each epoch's patches and augmentations depend on (seed, epoch) alone (EpochSeededData): a run resumed after a
    crash ends with the weights of the uninterrupted run, to the bit (a resumed run once restarted the data stream and
    trained its next epoch on the first epoch's patches)."""
    values = overrides("kits19", dataset_dir=str(kits_data), bundle_root=str(tmp_path / "resumed"), epochs=3)
    values.update(iterations_per_epoch=2, num_workers=workers)
    done = _crash_after_the_first_checkpoint(values)
    resumed = run_bundle(KITS, [*TRAIN, *cli_args(values)])
    assert f"at epoch {done} of 3" in resumed.stdout + resumed.stderr
    whole = run_bundle(KITS, [*TRAIN, *cli_args({**values, "bundle_root": str(tmp_path / "whole")})])
    runs = ("resumed", "whole")
    weights = [torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=True)["model"] for run in runs]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    val_losses = [dict(VAL_LOSS.findall(out.stdout)) for out in (resumed, whole)]
    assert val_losses[0] == {epoch: loss for epoch, loss in val_losses[1].items() if int(epoch) > done}


def test_interrupted_training_resumes(kits_data: Path, tmp_path: Path) -> None:
    values = overrides("kits19", dataset_dir=str(kits_data), bundle_root=str(tmp_path), epochs=4)
    values["iterations_per_epoch"] = 2
    last = tmp_path / "checkpoints" / "last.pt"
    done = _crash_after_the_first_checkpoint(values)
    out = run_bundle(KITS, [*TRAIN, *cli_args(values)])
    assert f"resumed from {last} at epoch {done} of 4" in out.stdout + out.stderr
    epochs = sorted({int(e) for e, _ in VAL_LOSS.findall(out.stdout)})
    assert epochs == list(range(done + 1, 5))  # only the missing epochs ran
    assert torch.load(last, weights_only=True)["trainer"]["iteration"] == 8
    # another fold in the same folder never resumes an interrupted run (the finished one is marked interrupted
    # after epoch 1 here); --resume false (lowercase) starts over
    record = json.loads(last.with_suffix(".json").read_text())
    last.with_suffix(".json").write_text(json.dumps({**record, "epoch": 1}))
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["trainer"]["iteration"] = 2
    torch.save(checkpoint, last)
    other = run_bundle(KITS, [*TRAIN, *cli_args({**values, "fold": 1})], check=False)
    assert other.returncode != 0 and "holds another run, interrupted after epoch 1 of 4" in other.stderr
    again = run_bundle(KITS, [*TRAIN, *cli_args({**values, "fold": 1, "resume": "false", "epochs": 1})])
    assert "resumed from" not in again.stdout + again.stderr


def _torchrun_training(data: Path, root: Path, processes: int, env: dict[str, str]) -> None:
    """Two epochs of two iterations per process under ``torchrun``; one ``model.pt`` and a resumable checkpoint of
    the unwrapped network, written by rank 0."""
    values = overrides("kits19", dataset_dir=str(data), bundle_root=str(root), epochs=2)
    values["iterations_per_epoch"] = 2
    config = "['configs/train.json','configs/multi_gpu_train.json']"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "-m", "monai.bundle", "run"]
    cmd += ["--config_file", config, *cli_args(values)]
    proc = subprocess.run(cmd, cwd=KITS, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert (proc.stdout + proc.stderr).count("Current learning rate") == 2  # once per epoch: rank 0 logs progress
    assert sorted(p.name for p in (root / "models").iterdir()) == ["model.pt"]
    last = torch.load(root / "checkpoints" / "last.pt", weights_only=True)
    assert last["trainer"]["iteration"] == 4
    assert not any(k.startswith("module.") for k in last["model"])  # saved without the DDP wrapper


def test_two_cpu_processes_with_torchrun(kits_data: Path, tmp_path: Path) -> None:
    """gloo on the CPU (GPUs hidden, so that it runs the same on a machine with one)."""
    _torchrun_training(kits_data, tmp_path, 2, {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_one_process_per_gpu_with_torchrun(kits_data: Path, tmp_path: Path) -> None:
    """NCCL, one process per visible GPU, with AMP (the bundle's default on a GPU)."""
    _torchrun_training(kits_data, tmp_path, torch.cuda.device_count(), {"OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"loss": "mixed_focall"}, "--loss 'mixed_focall'"),
        ({"fold": 3}, "fold must be an integer in 0..2"),
        ({"iterations_per_epoch": 0}, "--iterations_per_epoch must be a positive integer, got 0"),
        ({"sw_batch_size": 0}, "--sw_batch_size must be a positive integer, got 0"),
        ({"num_classes": 2}, "--num_classes must be 3"),
        (  # the run would record and report mixed_focal
            {"loss_function": "$monai.losses.DiceCELoss(softmax=True, to_onehot_y=True)"},
            "loss_function is a DiceCELoss, not the loss of --loss ('mixed_focal')",
        ),
    ],
)
def test_bad_start_fails_fast_through_the_cli(kits_data: Path, tmp_path: Path, override: dict, expected: str) -> None:
    values = {**overrides("kits19", dataset_dir=str(kits_data), bundle_root=str(tmp_path)), **override}
    proc = run_bundle(KITS, [*TRAIN, *cli_args(values)], check=False)
    assert proc.returncode != 0 and expected in proc.stderr
    assert not (tmp_path / "models").exists()


def test_a_damaged_label_ends_the_training_with_its_error_not_sigabrt(kits_data: Path, tmp_path: Path) -> None:
    """A label whose gzip CRC is wrong passes the header checks at start and fails while the cache is filled. With
    MONAI's CacheDataset the command then died of SIGABRT ("terminate called without an active exception", exit code
    134) while its other caching thread was still loading; JoiningCacheDataset stops it first: exit code 1."""
    data = tmp_path / "data"
    shutil.copytree(kits_data, data)
    values = overrides(
        "kits19", dataset_dir=str(data), bundle_root=str(tmp_path / "run"), cache_rate=1.0, num_workers=2
    )
    label = Path(_split(values)[0][0]["label"])  # the first case cached: the other thread is still loading
    damaged = bytearray(label.read_bytes())
    damaged[-6] ^= 0xFF  # in the gzip trailer's CRC-32
    label.write_bytes(bytes(damaged))
    proc = run_bundle(KITS, [*TRAIN, *cli_args(values)], check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"{label}: corrupt gzip stream, the file is damaged" in proc.stderr
    assert "terminate called" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_inference_checks_its_model_and_window_before_any_case(kits_data: Path, tmp_path: Path) -> None:
    """A missing models/model.pt is named with what writes it (MONAI's CheckpointLoader said "No such file" once the
    data loader had started), a damaged one is named (torch's own error did not name the file), and --sw_batch_size 0
    is refused (MONAI failed with "range() arg 3 must not be zero" once the first case was loaded)."""
    values = overrides("kits19", dataset_dir=str(kits_data), bundle_root=str(tmp_path))
    model = tmp_path / "models" / "model.pt"
    args = cli_args({**_infer(values), "output_dir": str(tmp_path / "infer")})
    missing = run_bundle(KITS, [*INFER, *args], check=False)
    assert missing.returncode == 1 and f"{model}: no such model file" in missing.stderr
    model.parent.mkdir(parents=True)
    torch.save({"weight": torch.zeros(2)}, model)
    model.write_bytes(model.read_bytes()[:-100])  # cut short in a copy
    damaged = run_bundle(KITS, [*INFER, *args], check=False)
    assert damaged.returncode == 1 and f"{model}: not a readable checkpoint" in damaged.stderr
    window = run_bundle(KITS, [*INFER, *args, "--sw_batch_size", "0"], check=False)
    assert window.returncode == 1 and "--sw_batch_size must be a positive integer, got 0" in window.stderr
    assert not (tmp_path / "infer").exists()


def test_training_tracked_with_mlflow(kits_data: Path, tmp_path: Path) -> None:
    """``--tracking mlflow`` (MONAI's built-in MLflow settings) logs the run's losses and metrics to MLflow."""
    mlflow = pytest.importorskip("mlflow", reason="the 'mlflow' extra is not installed (pip install -e '.[mlflow]')")
    values = overrides("kits19", dataset_dir=str(kits_data), bundle_root=str(tmp_path), epochs=1)
    values["iterations_per_epoch"] = 2
    run_bundle(KITS, [*TRAIN, "--tracking", "mlflow", *cli_args(values)])
    database = tmp_path / "eval" / "mlruns.db"  # MONAI's default: <output_dir>/mlruns.db
    assert database.is_file()
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{database}")
    runs = [run for experiment in client.search_experiments() for run in client.search_runs([experiment.experiment_id])]
    assert runs, "no MLflow run recorded"
    logged = set().union(*(run.data.metrics for run in runs))
    assert {"train_loss", "val_loss"} <= logged, logged
