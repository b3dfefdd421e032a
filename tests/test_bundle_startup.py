# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The code the bundle configs call: loss selection, the data split, inference images, the MONAI Label guard and the
per-case metrics writer (with a real SupervisedEvaluator)."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import warnings
from pathlib import Path

import monai
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from bundle_utils import BUNDLES, make_data
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.handlers import IgniteMetricHandler, from_engine
from monai.losses import DiceCELoss, DiceLoss
from monai.transforms import AsDiscreted, Compose
from monai.utils import version_leq

from monai_mixedfocal.bundle import (
    PerCaseMetricsWriter,
    build_loss,
    check_command_line_ids,
    check_device,
    check_run_options,
    check_sliding_window,
    check_training_setup,
    find_images,
    inference_images,
    inference_root,
    load_split,
    prediction_root,
    protect_key,
)
from monai_mixedfocal.data import (
    BRATS20_LABELS,
    BRATS20_NOT_IMAGES,
    KITS19_LABELS,
    KITS19_NOT_IMAGES,
    DataError,
    brats20_datalist,
    kits19_datalist,
    kits19_deterministic_transforms,
    write_datalist,
)
from monai_mixedfocal.losses import LOSS_NAMES, MixedFocalLoss
from monai_mixedfocal.metrics import ConfusionCountsMetric


@pytest.fixture(scope="module")
def kits_root(tmp_path_factory) -> Path:
    return make_data("kits19", tmp_path_factory.mktemp("kits"), cases=5)


def test_build_loss_by_name_or_object() -> None:
    loss = build_loss("mixed_focal", softmax=True, to_onehot_y=True)
    assert isinstance(loss, MixedFocalLoss)
    logits, label = torch.randn(2, 3, 8, 8, 8), torch.randint(0, 3, (2, 1, 8, 8, 8))
    assert torch.isfinite(loss(logits, label))
    custom = DiceCELoss(softmax=True, to_onehot_y=True)
    assert build_loss(custom, softmax=True) is custom  # a '_target_' loss is used as it is
    with pytest.raises(ValueError, match="--loss 'nope'") as info:
        build_loss("nope")
    assert all(name in str(info.value) for name in LOSS_NAMES)
    with pytest.raises(TypeError, match="registry name or a callable"):
        build_loss(3)
    with pytest.raises(ValueError, match=r"--loss 'focal_tversky' with arguments .*gamma"):
        build_loss("focal_tversky", gamma=-1.0)  # a registry loss with a bad argument is not "not in the registry"
    with pytest.raises(TypeError, match=r"--loss 'dice' with arguments .*bogus"):
        build_loss("dice", bogus=1)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_registry_loss_trains_with_the_bundle_arguments(name: str) -> None:
    """``--loss <name>`` builds with what the bundles pass, sigmoid losses included, and gives a finite gradient."""
    loss = build_loss(name, softmax=True, to_onehot_y=True)
    if getattr(loss, "sigmoid_only", False):
        assert loss.sigmoid and not loss.softmax
    logits = torch.randn(2, 3, 6, 6, 6, requires_grad=True)
    value = loss(logits, torch.randint(0, 3, (2, 1, 6, 6, 6)))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train_data": []}, "no training cases: check --dataset_dir"),
        ({"val_data": []}, "no validation cases: check --dataset_dir"),
        ({"patch_size": [32, 32]}, r"--patch_size must be three positive integers, got \[32, 32\]"),
        ({"patch_size": [32, 0, 16]}, "--patch_size must be three positive integers"),
        ({"patch_size": [32, 32.5, 16]}, "--patch_size must be three positive integers"),
        ({"patch_size": 32}, "--patch_size must be three positive integers, got 32"),  # 'int' is not iterable
        ({"epochs": 0}, "--epochs must be a positive integer, got 0"),
        ({"epochs": 2.0}, "--epochs must be a positive integer, got 2.0"),
        ({"iterations_per_epoch": 0}, "--iterations_per_epoch must be a positive integer, got 0"),
        ({"iterations_per_epoch": True}, "--iterations_per_epoch must be a positive integer, got True"),
        ({"num_classes": 2}, r"--num_classes must be 3, .* \(0 background, 1 kidney, 2 tumor\); got 2"),
        ({"num_classes": 3.0}, "--num_classes must be 3"),
        ({"num_classes": 4}, "--num_classes must be 3"),  # trained, then its evaluation failed after every case
        ({"num_classes": 1, "labels": BRATS20_LABELS}, r"must be 2, .* \(0 background, 1 enhancing tumor\); got 1"),
        ({"world_size": 2}, r"1 validation case\(s\) for 2 processes: each process validates at least one case"),
        (
            {"loss_function": DiceCELoss(softmax=True)},  # no to_onehot_y: failed at the first step, after caching
            r"the loss DiceCELoss fails on a network output \[1, 3, 4, 4, 4\] and a class-index label .* A MONAI loss",
        ),
        (  # --loss_kwargs "{'class_weights': 'running'}" given whole: no to_onehot_y, failed at the first step
            {"loss_function": build_loss("sigmoid_focal", class_weights="running"), "loss": "sigmoid_focal"},
            r"the loss SigmoidFocalLoss fails .* --loss_kwargs given whole replaces .* --loss_kwargs#<name> <value>",
        ),
        (
            {"loss_function": DiceLoss(softmax=True, to_onehot_y=True, reduction="none")},
            r"the loss DiceLoss returns a Tensor of shape \(1, 3, 1, 1, 1\), not a scalar tensor",
        ),
        (  # an overridden --loss_function: the run would record, resume and report --loss
            {"loss": "dice"},
            r"loss_function is a MixedFocalLoss, not the loss of --loss \('dice'\); .* Give the loss whole to --loss",
        ),
        (
            {"loss": DiceCELoss(softmax=True, to_onehot_y=True)},
            r"loss_function is a MixedFocalLoss, not .* \(DiceCELoss\)",
        ),
    ],
)
def test_the_training_setup_is_refused_before_any_data_is_cached(change: dict, message: str) -> None:
    """With 0 iterations per epoch MONAI's trainer skipped the run with a warning and the command ended with exit code
    0 and no model; with too few classes the first loss call failed, after every case had been cached; the other
    values fail at start with the option named."""
    setup = {
        "loss_function": MixedFocalLoss(softmax=True, to_onehot_y=True),
        "train_data": [{"image": "a"}],
        "val_data": [{"image": "b"}],
        "patch_size": [32, 32, 16],
        "epochs": 2,
        "iterations_per_epoch": 5,
        "num_classes": 3,
        "labels": KITS19_LABELS,
    }
    summary = check_training_setup(**setup)
    check_training_setup(**{**setup, "loss": "mixed_focal"})  # built by build_loss from --loss
    target_loss = DiceCELoss(softmax=True, to_onehot_y=True)
    check_training_setup(**{**setup, "loss_function": target_loss, "loss": target_loss})  # a _target_ loss
    assert summary["train_cases"] == summary["val_cases"] == 1 and summary["loss"] == "MixedFocalLoss"
    running = build_loss("sigmoid_focal", softmax=True, to_onehot_y=True, class_weights="running")
    check_training_setup(**{**setup, "loss_function": running, "loss": "sigmoid_focal"})
    assert running.class_weights.num_updates == 0  # the check's call is no training step
    with pytest.raises(ValueError, match=message):
        check_training_setup(**{**setup, **change})


@pytest.mark.parametrize(
    ("sw_batch_size", "overlap", "message"),
    [
        (0, 0.5, "--sw_batch_size must be a positive integer, got 0"),
        (2.5, 0.5, "--sw_batch_size must be a positive integer, got 2.5"),
        (4, 1.0, r"--sw_overlap must be in \[0, 1\) \(one value, or one per axis: 3\), got 1.0"),
        (4, [0.5, 0.5], r"one per axis: 3\), got \[0.5, 0.5\]"),  # failed at the first validation, an epoch in
        (4, -0.1, "--sw_overlap must be in"),
        (4, [0.5, 1.0, 0.5], "--sw_overlap must be in"),
        (4, [], "--sw_overlap must be in"),
        (4, "0.5", "--sw_overlap must be in"),
    ],
)
def test_the_sliding_window_settings_are_refused_at_start(sw_batch_size, overlap, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_sliding_window(sw_batch_size, overlap)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"learning_rate": "abc"}, "--learning_rate must be a number > 0, got 'abc'"),
        ({"learning_rate": -1}, "--learning_rate must be a number > 0, got -1"),
        ({"learning_rate": float("nan")}, "--learning_rate must be a number > 0"),
        ({"learning_rate": 1e-3, "min_learning_rate": "abc"}, r"--min_learning_rate must be a number in \[0, "),
        ({"learning_rate": 1e-3, "min_learning_rate": 1e-2}, r"in \[0, --learning_rate 0.001\], got 0.01"),
        ({"lr_factor": 2}, r"--lr_factor must be a number in \(0, 1\), got 2"),
        ({"lr_factor": 0}, r"--lr_factor must be a number in \(0, 1\), got 0"),
        ({"lr_patience": -1}, "--lr_patience must be an integer >= 0, got -1"),
        ({"lr_patience": 2.5}, "--lr_patience must be an integer >= 0, got 2.5"),
        ({"val_interval": 0}, "--val_interval must be an integer >= 1, got 0"),
        ({"batch_size": 0}, "--batch_size must be an integer >= 1, got 0"),
        ({"batch_size": True}, "--batch_size must be an integer >= 1, got True"),
        ({"num_workers": -1}, "--num_workers must be an integer >= 0, got -1"),
        ({"cache_rate": 2}, r"--cache_rate must be a number in \[0, 1\], got 2"),  # was taken as 1
        ({"aug_prob": 2.0}, r"--aug_prob must be a number in \[0, 1\], got 2.0"),  # clipped to 1, recorded as 2
        ({"switches": {"amp": "maybe"}}, "--amp must be true or false, got 'maybe'"),
        ({"switches": {"resume": True, "keep_freed_memory": None}}, "--keep_freed_memory must be true or false"),
    ],
)
def test_the_training_options_are_refused_at_start(options: dict, message: str) -> None:
    """They reached PyTorch only when the trainer was built, after the caching (a raw '<=' not supported between
    'float' and 'str'), or never failed (--lr_patience -1 lowered the learning rate every epoch)."""
    with pytest.raises(ValueError, match=message):
        check_run_options(**options)


def test_the_training_options_the_bundles_take() -> None:
    check_run_options(
        {"amp": "false", "resume": True, "keep_freed_memory": "yes", "training_lock": "0"},
        learning_rate=3e-4,
        min_learning_rate=0,
        lr_factor=0.1,
        lr_patience=0,
        val_interval=1,
        batch_size=2,
        num_workers=0,
    )
    check_run_options(learning_rate=1, min_learning_rate=1)


@pytest.mark.parametrize(("device", "message"), [("gpu", "--device must name a torch device"), (3, "must name")])
def test_a_device_that_is_not_one_is_refused(device: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_device(device)


def test_a_cuda_device_this_machine_lacks_is_refused() -> None:
    check_device("cpu")
    check_device(torch.device("cpu"))
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=rf"--device cuda:{count}: this machine has {count} CUDA GPU"):
        check_device(f"cuda:{count}")  # failed after the caching: 'Torch not compiled with CUDA enabled'


def test_the_sliding_window_settings_monai_takes() -> None:
    for sw_batch_size, overlap in ((1, 0), (4, 0.5), (2, (0.25, 0.5, 0.0)), (8, np.float64(0.75))):
        check_sliding_window(sw_batch_size, overlap)


def test_an_overlap_that_multiplies_the_inference_time_warns() -> None:
    """--sw_overlap 0.99 was taken without a word: 422,331 windows on one volume instead of 27 (hours, not minutes)."""
    with pytest.warns(UserWarning, match=r"--sw_overlap 0.99: every voxel is inferred about 1,000,000 times") as caught:
        check_sliding_window(1, 0.99)
    assert "about 125,000 times as long as with the default" in str(caught[0].message)
    assert caught[0].filename == __file__  # stacklevel: the caller, not this project's code
    with pytest.warns(UserWarning, match="about 200 times"):
        check_sliding_window(1, [0.9, 0.9, 0.5])
    with pytest.warns(UserWarning, match=r"about 72 times \(1 / \(1 - overlap\) per axis; 8 times with the default"):
        check_sliding_window(1, 0.76)  # just over the limit
    with pytest.warns(UserWarning, match=r"about 100 times \(1 / \(1 - overlap\) per axis; 4 times with the default"):
        check_sliding_window(1, 0.9, spatial_dims=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_sliding_window(1, 0.75)  # 64 times: the limit
        check_sliding_window(1, [0.9, 0.5, 0.5])  # 40 times


def test_load_split_lists_the_folder_or_reads_a_datalist(kits_root: Path, tmp_path: Path) -> None:
    train, val = load_split("kits19", kits_root, fold=1, num_folds=5)
    assert len(train) == 4 and len(val) == 1
    assert all(Path(item["image"]).is_file() and Path(item["label"]).is_file() for item in train + val)
    datalist = write_datalist(tmp_path / "datalist.json", kits19_datalist(kits_root), num_folds=5, seed=0)
    from_file = load_split("kits19", kits_root, fold=1, datalist=str(datalist))
    assert [c["case"] for c in from_file[1]] == [c["case"] for c in val]  # the same folds either way
    with pytest.raises(DataError, match=r"--fold 5.*fold must be an integer in 0\.\.4"):
        load_split("kits19", kits_root, fold=5, num_folds=5)
    with pytest.raises(DataError, match="--fold 9"):
        load_split("kits19", kits_root, fold=9, datalist=str(datalist))
    with pytest.raises(ValueError, match="source must be one of"):
        load_split("msd", kits_root, fold=0)


def test_a_datalist_of_the_other_data_set_is_refused(kits_root: Path, tmp_path: Path) -> None:
    """The KiTS19 bundle trained on a BraTS20 datalist without a word (MRI clipped to CT's HU window, enhancing tumour
    learned as kidney); a datalist's recorded 'source' names its data set. One without a source, or an MSD one, is
    taken (the user's choice)."""
    datalist = write_datalist(tmp_path / "kits.json", kits19_datalist(kits_root), num_folds=5, seed=0)
    content = json.loads(datalist.read_text())
    assert content["source"] == "kits19"
    with pytest.raises(DataError, match=r"kits\.json is a kits19 datalist .* this is the brats20 bundle"):
        load_split("brats20", kits_root, fold=1, datalist=str(datalist))
    expected = load_split("kits19", kits_root, fold=1, datalist=str(datalist))
    for source in (None, "msd"):
        other = tmp_path / f"{source}.json"
        other.write_text(
            json.dumps({k: v for k, v in content.items() if k != "source"} | ({"source": source} if source else {}))
        )
        assert load_split("kits19", kits_root, fold=1, datalist=str(other)) == expected


def test_a_datalist_is_resolved_under_the_first_root_holding_its_files(kits_root: Path, tmp_path: Path) -> None:
    datalist = str(write_datalist(tmp_path / "datalist.json", kits19_datalist(kits_root), num_folds=5, seed=0))
    expected = load_split("kits19", kits_root, fold=1, datalist=datalist)
    # the bundle's default --dataset_dir, which does not exist here, gives way to the root recorded in the JSON
    assert load_split("kits19", "/workspace/data/kits19", fold=1, datalist=datalist) == expected
    assert load_split("kits19", "", fold=1, datalist=datalist) == expected
    # the repository's data/ folder, as accepted when listing, finds the datalist's data/case_... paths too
    assert load_split("kits19", kits_root / "data", fold=1, datalist=datalist) == expected
    # the data set moved: --dataset_dir finds it; the recorded root no longer holds it
    moved = tmp_path / "moved"
    shutil.copytree(kits_root, moved)
    train, val = load_split("kits19", moved, fold=1, datalist=datalist)
    assert all(Path(item["image"]).is_relative_to(moved) for item in train + val)
    (moved / "data" / val[0]["case"] / "segmentation.nii.gz").unlink()
    with pytest.raises(DataError, match=r"under none of the roots tried: .*moved \(no .*segmentation\.nii\.gz\)"):
        load_split("kits19", moved, fold=1, datalist=str(shutil.copy(datalist, moved / "datalist.json")))


def test_a_saved_brats20_datalist_never_trains_on_another_segmentations_masks(tmp_path: Path) -> None:
    """The masks of a saved datalist are checked against their segmentations at start-up: after the data set under
    the root is replaced by another with the same case names, or the masks are deleted, they are rebuilt."""
    data = make_data("brats20", tmp_path / "data", cases=4, seed=0)
    path = write_datalist(
        tmp_path / "runs" / "datalist.json", brats20_datalist(data, labels_dir=tmp_path / "runs" / "labels_et"), 2
    )
    shutil.rmtree(data)
    make_data("brats20", data, cases=4, seed=1)  # other segmentations under the same names

    def masks_match(items: list[dict]) -> bool:
        return all(
            np.array_equal(np.asarray(nib.load(i["label"]).dataobj) == 1, np.asarray(nib.load(i["seg"]).dataobj) == 4)
            for i in items
        )

    with pytest.warns(UserWarning, match="4 enhancing-tumour mask.*rebuilt"):
        train, val = load_split("brats20", data, fold=0, datalist=path, num_folds=2)
    assert masks_match(train + val)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # current masks are reused without a word
        load_split("brats20", data, fold=0, datalist=path, num_folds=2)
    shutil.rmtree(tmp_path / "runs" / "labels_et")
    with pytest.warns(UserWarning, match="rebuilt"):
        train, val = load_split("brats20", data, fold=1, datalist=path, num_folds=2)
    assert masks_match(train + val)


def test_predictions_are_saved_inside_the_output_folder(tmp_path: Path) -> None:
    """SaveImaged mirrors the folders below prediction_root: dataset_dir when it holds the images, else their root."""
    items = [{"image": str(tmp_path / "kits19" / "data" / f"case_0000{k}" / "imaging.nii.gz")} for k in (1, 3)]
    assert prediction_root(items, tmp_path / "kits19") == str(tmp_path / "kits19")
    assert prediction_root(items, "/workspace/data/kits19") == str(tmp_path / "kits19" / "data")  # a bundle default
    assert prediction_root(items[:1]) == str(tmp_path / "kits19" / "data")  # one case keeps its case folder
    with pytest.raises(ValueError, match="no 'image' path"):
        prediction_root([{"label": "x"}])


def test_find_images(kits_root: Path, tmp_path: Path) -> None:
    images = find_images(kits_root, "**/imaging.nii.gz")
    assert len(images) == 5 and images == sorted(images)
    with pytest.raises(DataError, match="no image matches"):
        find_images(tmp_path, "**/imaging.nii.gz")
    with pytest.raises(DataError, match="is not a folder"):
        find_images(tmp_path / "missing", "*")
    damaged = tmp_path / "damaged" / "case_00000" / "imaging.nii.gz"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(Path(images[0]).read_bytes()[:-100])
    with pytest.raises(DataError, match=r"damaged/case_00000/imaging\.nii\.gz: truncated"):
        find_images(tmp_path / "damaged", "**/imaging.nii.gz")


def test_inference_images_and_their_output_root(kits_root: Path, tmp_path: Path) -> None:
    """Without --datalist, the files matching the pattern; with it, the listed files (checked), whose label maps mirror
    their own folders under output_dir instead of the default dataset_dir's."""
    found = find_images(kits_root, "**/imaging.nii.gz")
    assert inference_images(kits_root, "**/imaging.nii.gz") == found
    assert inference_root("/workspace/data/kits19") == "/workspace/data/kits19"  # no file read (MONAI Label)
    own = tmp_path / "user" / "sub" / "ct.nii.gz"
    own.parent.mkdir(parents=True)
    own.write_bytes(Path(found[0]).read_bytes())
    assert inference_images("/workspace/data/kits19", "*", [str(own)]) == [str(own)]
    assert inference_images("/workspace/data/kits19", "*", str(own)) == [str(own)]  # one file
    assert inference_root("/workspace/data/kits19", [str(own)]) == str(tmp_path / "user")
    assert inference_root(kits_root, found[:2]) == str(kits_root)  # under dataset_dir: its layout
    with pytest.raises(DataError, match=r"a JSON datalist; inference takes a list of image files"):
        inference_images(kits_root, "*", str(tmp_path / "datalist.json"))
    with pytest.raises(DataError, match=r"missing\.nii\.gz: image file not found \(listed in --datalist\)"):
        inference_images(kits_root, "*", [str(own), str(tmp_path / "missing.nii.gz")])
    with pytest.raises(DataError, match=r"must be a list of image files, got \[\]"):
        inference_images(kits_root, "*", [])
    own.write_bytes(own.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"sub/ct\.nii\.gz: truncated"):
        inference_images(kits_root, "*", [str(own)])


def test_protect_key_lets_spacingd_run_with_monai_labels_image_path(kits_root: Path) -> None:
    image = find_images(kits_root, "**/imaging.nii.gz")[0]
    plain = Compose(kits19_deterministic_transforms(label_key=None))
    request = {"image": image, "image_path": image}  # what MONAI Label puts in an inference request
    if version_leq("1.6.0", monai.__version__):  # MONAI >= 1.6 updates every "image_*" entry as if it were metadata
        with pytest.raises(RuntimeError, match="Spacingd"):
            plain(dict(request))
    out = Compose(protect_key(kits19_deterministic_transforms(label_key=None)))(dict(request))
    assert out["image_path"] == image and "_protected_image_path" not in out
    assert torch.equal(out["image"], plain({"image": image})["image"])
    assert "image_path" not in Compose(protect_key([]))({"image": image})  # absent stays absent


def _evaluator(tmp_path: Path, cases: list[dict], writer: PerCaseMetricsWriter) -> SupervisedEvaluator:
    post = Compose([AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=3)])
    metric = IgniteMetricHandler(
        metric_fn=ConfusionCountsMetric("dsc", include_background=False),
        output_transform=from_engine(["pred", "label"]),
        save_details=True,
    )
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(cases, batch_size=2),
        network=torch.nn.Identity(),  # the "prediction" is the image itself: scores known in advance
        postprocessing=post,
        key_val_metric={"val_mean_dice": metric},
        val_handlers=[writer],
    )


def test_per_case_writer_with_a_real_evaluator(tmp_path: Path) -> None:
    label = torch.zeros(1, 4, 4, 4)
    label[0, :2] = 1  # kidney, 32 voxels
    label[0, 3, 3, 3] = 2  # tumour, 1 voxel
    perfect = torch.nn.functional.one_hot(label[0].long(), 3).permute(3, 0, 1, 2).float() * 10
    half = perfect.clone()
    half[:, 1] = torch.tensor([10.0, 0, 0]).view(3, 1, 1)  # row 1 predicted background: kidney TP 16, FN 16
    cases = [
        {"image": perfect, "label": label, "case": "case_a"},
        {"image": half, "label": label, "case": "case_b"},
        {"image": perfect, "label": torch.zeros_like(label), "case": "case_c"},  # empty label, false alarms
    ]
    writer = PerCaseMetricsWriter(
        tmp_path / "eval" / "per_case.csv",
        metric_name="val_mean_dice",
        classes={"2": "tumor", "0": "background", "1": "kidney"},  # in any order: by class index
        summary_file=tmp_path / "eval" / "summary.csv",
    )
    evaluator = _evaluator(tmp_path, cases, writer)
    evaluator.run()
    evaluator.run()  # a validator runs again every interval: each run writes its own cases only
    table = pd.read_csv(tmp_path / "eval" / "per_case.csv")
    assert table[["case", "class"]].values.tolist() == [
        ["case_a", "kidney"],
        ["case_a", "tumor"],
        ["case_b", "kidney"],
        ["case_b", "tumor"],
        ["case_c", "kidney"],
        ["case_c", "tumor"],
    ]
    assert table["dsc"].tolist() == pytest.approx([1.0, 1.0, 32 / 48, 1.0, 0.0, 0.0])
    assert table["recall"].tolist() == pytest.approx([1.0, 1.0, 0.5, 1.0, 0.0, 0.0])
    assert table["label_voxels"].tolist() == [32, 1, 32, 1, 0, 0]
    summary = pd.read_csv(tmp_path / "eval" / "summary.csv").set_index("class")
    assert summary.loc["kidney", "dsc_mean"] == pytest.approx((1 + 32 / 48 + 0) / 3)


def test_per_case_writer_needs_the_counts_metric(tmp_path: Path) -> None:
    writer = PerCaseMetricsWriter(tmp_path / "x.csv", metric_name="other", classes=["background", "kidney", "tumor"])
    case = {"image": torch.zeros(3, 2, 2, 2), "label": torch.zeros(1, 2, 2, 2), "case": "a"}
    with pytest.raises(ValueError, match="no \\[cases, classes, 3\\] counts under metric 'other'"):
        _evaluator(tmp_path, [case], writer).run()
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(ValueError, match="no class to report"):
        PerCaseMetricsWriter(tmp_path / "x.csv", "m", classes=["background"])


def _damage(path: Path, kind: str) -> None:
    """Damage a NIfTI file after the datalist was written: crop it, shift its affine 30 mm, give it an undefined
    datatype code, or cut it short."""
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return
    if kind == "datatype":
        raw = bytearray(gzip.decompress(path.read_bytes()))
        raw[70:72] = np.array([999], "<i2").tobytes()
        path.write_bytes(gzip.compress(bytes(raw)))
        return
    image = nib.load(path)
    array, affine = np.asanyarray(image.dataobj), image.affine.copy()
    if kind == "cropped":
        array = array[:, :-4]
    else:
        affine[:3, 3] += 30.0
    nib.save(nib.Nifti1Image(array, affine, image.header.copy()), path)


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("segmentation", "cropped", r"label shape \(24, 60, 64\) does not match image shape \(24, 64, 64\)"),
        ("segmentation", "shifted", "label voxel grid does not match the image's"),
        ("imaging", "datatype", r"cannot read the NIfTI header \(data code 999"),
        ("imaging", "truncated", "truncated or corrupt gzip stream"),
    ],
)
def test_a_saved_datalist_is_checked_as_the_folder_listing_is(
    kits_root: Path, tmp_path: Path, name: str, kind: str, message: str
) -> None:
    """Training from a saved datalist (the study's path) checks every image / label pair from its headers, as the
    folder listing does; the error names the file."""
    data = tmp_path / "data"
    shutil.copytree(kits_root, data)
    datalist = str(write_datalist(tmp_path / "datalist.json", kits19_datalist(data), num_folds=5, seed=0))
    damaged = data / "data" / "case_00001" / f"{name}.nii.gz"
    _damage(damaged, kind)
    with pytest.raises(DataError, match=rf"--datalist .*: {damaged}: {message}"):
        load_split("kits19", data, fold=0, datalist=datalist)
    with pytest.raises(DataError, match=rf"{damaged}: {message}"):  # the folder listing says the same
        load_split("kits19", data, fold=0, num_folds=5)


def test_a_saved_brats20_datalist_checks_the_segmentation_against_the_image(tmp_path: Path) -> None:
    data = make_data("brats20", tmp_path / "data", cases=2, seed=0)
    path = write_datalist(tmp_path / "datalist.json", brats20_datalist(data, labels_dir=tmp_path / "labels_et"), 2)
    seg = next(data.rglob("*_seg.nii.gz"))
    _damage(seg, "shifted")
    with pytest.raises(DataError, match=rf"{seg}: label voxel grid does not match"):
        load_split("brats20", data, fold=0, datalist=path, num_folds=2)


def test_a_diverged_network_output_is_named_as_such() -> None:
    """A NaN network output (a diverged training) keeps its ValueError, now with the likely cause and the remedy."""
    loss = build_loss("mixed_focal", softmax=True, to_onehot_y=True)
    logits = torch.full((1, 3, 4, 4, 4), float("nan"))
    with pytest.raises(ValueError, match=r"input contains NaN/inf values\..*diverged.*lower the learning rate"):
        loss(logits, torch.zeros(1, 1, 4, 4, 4))


def test_a_boolean_overlap_is_refused() -> None:
    """Against the bug (bool accepted as a number): ``--sw_overlap True`` is a typo, not an overlap of 1."""
    with pytest.raises(ValueError, match="--sw_overlap must be in"):
        check_sliding_window(4, True)
    with pytest.raises(ValueError, match="--sw_overlap must be in"):
        check_sliding_window(4, [0.5, False, 0.5])


def test_build_loss_moves_a_loss_with_buffers_to_the_device() -> None:
    """Against the bug (device ignored): class weights on the CPU fail the first GPU step."""
    import monai

    from monai_mixedfocal.bundle import build_loss

    loss = build_loss(monai.losses.DiceCELoss(to_onehot_y=True, softmax=True, weight=torch.ones(3)), device="meta")
    assert {b.device.type for b in loss.buffers()} == {"meta"}


def test_find_images_lists_files_only(tmp_path: Path) -> None:
    """Against the bug (no is_file filter): a folder matching the pattern (``case_*``) is not an image."""
    from monai_mixedfocal.bundle import find_images

    (tmp_path / "case_00000").mkdir()
    (tmp_path / "case_00001.txt").write_text("an image")
    assert find_images(tmp_path, "case_*") == [str(tmp_path / "case_00001.txt")]


def test_an_upper_case_json_datalist_is_refused_for_inference(tmp_path: Path) -> None:
    """Against the bug (case-sensitive suffix): ``LIST.JSON`` is a datalist too."""
    from monai_mixedfocal.bundle import inference_images
    from monai_mixedfocal.data import DataError

    with pytest.raises(DataError, match="a JSON datalist"):
        inference_images(tmp_path, "*", str(tmp_path / "SPLIT.JSON"))


def test_find_images_skips_the_metadata_macos_adds_to_archives(kits_root: Path, tmp_path: Path) -> None:
    """The official MSD tarballs hold ``._<name>.nii.gz`` AppleDouble files: inference stopped at the first one as an
    unreadable NIfTI file."""
    root = tmp_path / "kits19"
    shutil.copytree(kits_root, root)
    expected = find_images(root, "**/imaging.nii.gz")
    (root / "data" / "case_00000" / "._imaging.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "__MACOSX" / "data" / "case_00000").mkdir(parents=True)
    (root / "__MACOSX" / "data" / "case_00000" / "imaging.nii.gz").write_bytes(b"resource fork")
    assert find_images(root, "**/*imaging.nii.gz") == expected


@pytest.mark.parametrize(
    ("name", "not_images"),
    [
        *[(f"x{part}.nii.gz", BRATS20_NOT_IMAGES) for part in ("_seg", "_et", "_t1", "_t2", "_flair")],
        ("W39_1998.09.19_Segm.nii", BRATS20_NOT_IMAGES),  # case 355's segmentation
        ("segmentation.nii.gz", KITS19_NOT_IMAGES),
        ("aggregated_MAJ_seg.nii.gz", KITS19_NOT_IMAGES),  # KiTS21's, beside the images
    ],
)
def test_each_name_of_the_layouts_that_is_not_an_image_is_refused(
    kits_root: Path, tmp_path: Path, name: str, not_images: tuple[str, ...]
) -> None:
    image = find_images(kits_root, "**/imaging.nii.gz")[0]
    shutil.copy(image, tmp_path / name)
    with pytest.raises(DataError, match=r"also matches 1 file\(s\) that are not images this network takes"):
        find_images(tmp_path, "*", not_images)
    (tmp_path / name).rename(tmp_path / "x_t1ce.nii.gz")  # the image BraTS20 takes
    assert find_images(tmp_path, "*", BRATS20_NOT_IMAGES) == [str(tmp_path / "x_t1ce.nii.gz")]


def test_a_dot_file_is_not_macos_metadata_and_a_root_inside_macosx_is_searched(kits_root: Path, tmp_path: Path) -> None:
    image = find_images(kits_root, "**/imaging.nii.gz")[0]
    root = tmp_path / "__MACOSX" / "restored"
    root.mkdir(parents=True)
    shutil.copy(image, root / ".hidden_ct.nii.gz")
    assert find_images(root, "*.nii.gz") == [str(root / ".hidden_ct.nii.gz")]  # only what lies below the root counts


def test_inference_refuses_two_images_that_would_be_written_to_one_label_map(kits_root: Path, tmp_path: Path) -> None:
    """SaveImaged drops .nii and .nii.gz: ct.nii and ct.nii.gz of one folder (or BraTS20's _t1ce.nii beside its
    _t1ce.nii.gz) were both written to ct_seg.nii.gz, the second replacing the first, with exit status 0."""
    source = find_images(kits_root, "**/imaging.nii.gz")[0]
    folder = tmp_path / "c"
    folder.mkdir()
    shutil.copy(source, folder / "ct.nii.gz")
    nib.save(nib.load(source), folder / "ct.nii")
    (tmp_path / "d").mkdir()
    shutil.copy(source, tmp_path / "d" / "ct.nii.gz")
    message = r"c/ct\.nii\.gz and .*c/ct\.nii would both be segmented into ct_seg\.nii\.gz, the second replacing"
    with pytest.raises(DataError, match=message):
        inference_images(tmp_path, "*", [str(folder / "ct.nii.gz"), str(folder / "ct.nii")])
    with pytest.raises(DataError, match="would both be segmented into ct_seg"):
        inference_images(tmp_path, "**/ct.nii*")  # found by the pattern
    with pytest.raises(DataError, match="would both be segmented"):
        inference_images(tmp_path, "*", [str(folder / "ct.nii")] * 2)  # listed twice
    names = [str(folder / "ct.nii"), str(tmp_path / "d" / "ct.nii.gz")]  # other folders: other label maps
    assert inference_images(tmp_path, "*", names) == names


def test_inference_refuses_an_image_that_is_not_3_d_naming_it(kits_root: Path, tmp_path: Path) -> None:
    """A CT scan saved as (S, H, W, 1, 1) failed inside MONAI's Orientationd ('axcodes must match data_array
    spatially'), without the file's name."""
    root = tmp_path / "kits19"
    shutil.copytree(kits_root, root)
    image = root / "data" / "case_00001" / "imaging.nii.gz"
    source = nib.load(image)
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj)[..., None, None], source.affine), image)
    expected = r"case_00001/imaging\.nii\.gz: expected a 3-D image, got shape \(24, 64, 64, 1, 1\) \(its extra"
    with pytest.raises(DataError, match=expected):
        find_images(root, "**/imaging.nii.gz")
    with pytest.raises(DataError, match=expected):
        inference_images(root, "*", [str(image)])


def test_num_classes_covers_the_largest_label_value() -> None:
    """Against the bug (``len(labels)`` instead of ``max + 1``): label values with a gap need max + 1 output
    channels."""
    from monai_mixedfocal.bundle import check_training_setup
    from monai_mixedfocal.losses import MixedFocalLoss

    labels = {"0": "background", "2": "tumor"}
    with pytest.raises(ValueError, match="--num_classes must be 3"):
        check_training_setup(MixedFocalLoss(), [{"image": "a"}], [{"image": "b"}], num_classes=2, labels=labels)


def test_a_moved_repository_is_found_through_its_data_folder(tmp_path: Path) -> None:
    """Against the bug (the KiTS19 repository root of a ``data/`` dataset_dir not tried): the existing test passed
    through the root recorded in the JSON, which still held the files."""
    from bundle_utils import make_data

    from monai_mixedfocal.bundle import load_split
    from monai_mixedfocal.data import kits19_datalist, write_datalist

    original = make_data("kits19", tmp_path / "original", cases=3)
    datalist = str(write_datalist(tmp_path / "datalist.json", kits19_datalist(original), num_folds=3, seed=0))
    moved = tmp_path / "moved"
    original.rename(moved)  # the recorded root no longer holds the files
    train, val = load_split("kits19", moved / "data", fold=0, datalist=datalist)
    assert all(Path(item["image"]).is_relative_to(moved) for item in train + val)


def test_predictions_of_images_partly_outside_dataset_dir_mirror_their_common_folder(tmp_path: Path) -> None:
    """Against the bug (``all`` -> ``any``): one image outside dataset_dir would be written above output_dir."""
    from monai_mixedfocal.bundle import prediction_root

    items = [
        {"image": str(tmp_path / "kits19" / "data" / "case_00001" / "imaging.nii.gz")},
        {"image": str(tmp_path / "other" / "case_00009" / "imaging.nii.gz")},
    ]
    assert prediction_root(items, tmp_path / "kits19") == str(tmp_path)


MONAI_BUNDLE = str(Path(monai.__file__).parent / "bundle" / "__main__.py")  # sys.argv[0] of `python -m monai.bundle`


def _command_line(*options: str, configs: str = "['configs/train.json','configs/evaluate.json']") -> list[str]:
    return [MONAI_BUNDLE, "run", "training", "--meta_file", "configs/metadata.json", "--config_file", configs, *options]


@pytest.mark.parametrize(
    ("option", "hint"),
    [
        ("--epoch", "(did you mean 'epochs'?)"),
        ("--flod", "(did you mean 'fold'?)"),
        ("--save_prediction", "(did you mean 'save_predictions'?)"),
        ("--network_def#featurs", "(did you mean 'network_def#features'"),
        ("--lr", " in configs/train.json or configs/evaluate.json; an option must name an id"),
    ],
)
def test_an_option_that_names_no_id_is_refused(option: str, hint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--epoch 50` was added to the config unused, and the run trained the bundle's 500 epochs without a word."""
    monkeypatch.chdir(BUNDLES["kits19"])
    with pytest.raises(ValueError, match=re.escape(f"{option}: no such id") + ".*" + re.escape(hint)):
        check_command_line_ids(_command_line("--epochs", "2", option, "5"))


def test_the_options_a_bundle_run_takes_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BUNDLES["kits19"])
    check_command_line_ids(
        _command_line(
            "--epochs=2",
            "--learning-rate",  # fire reads '-' as '_'
            "1e-3",
            "--loss_kwargs#class_weights",  # a new entry of a plain mapping: the loss checks its own arguments
            "running",
            "--network_def#dropout",  # an argument BasicUNet takes
            "0.1",
            "--train#trainer#max_epochs",
            "3",
            "--lr_patience",
            "-1",  # a negative value is a value, not an option
            "--tracking",
            "mlflow",
            "--tracking_uri",  # added by MONAI's MLflow settings (MONAI Label's torchrun command passes it)
            "file:///tmp/mlruns",
            "--logging_file",
            "configs/logging.conf",
        )
    )
    check_command_line_ids(["/usr/bin/monailabel", "start_server", "--epoch", "2"])  # not a monai.bundle command
    with pytest.raises(ValueError, match=r"--epoch: no such id in configs/train\.json or configs/evaluate\.json"):
        check_command_line_ids(_command_line("--epoch", "2", configs="configs/train.json,configs/evaluate.json"))
    with pytest.raises(ValueError, match=r"--network_def#featurs: .*inference\.json"):
        check_command_line_ids(_command_line("--network_def#featurs", "[1]", configs="configs/inference.json"))
