# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The two bundles as the Model Zoo checks and MONAI Label read them: files, metadata, properties, network I/O, and
the start-up checks of a run (unknown loss, empty data set, fold out of range), all without training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from bundle_utils import BUNDLES, REPO, SCHEMA, bundle_workflow, make_data, overrides, write_model_file
from error_chain import error_chain
from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out
from monai.transforms import Compose

from monai_mixedfocal.bundle import EpochSeededData, ResumeCheckpoint, run_settings
from monai_mixedfocal.losses import LOSS_NAMES, SigmoidFocalLoss
from monai_mixedfocal.losses.class_weights import ClassWeightsLogger

CONFIGS = ("metadata.json", "train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "logging.conf")
CHANNELS = {
    "kits19": {"0": "background", "1": "kidney", "2": "tumor"},
    "brats20": {"0": "background", "1": "enhancing tumor"},
}
TINY_PATCH = {"kits19": (32, 32, 16), "brats20": (32, 32, 32)}


@pytest.fixture(scope="module", params=sorted(BUNDLES))
def dataset(request, tmp_path_factory) -> tuple[str, Path]:
    """(dataset name, generated data set root)."""
    name = request.param
    return name, make_data(name, tmp_path_factory.mktemp(name), cases=6)


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_bundle_files_and_metadata(name: str) -> None:
    bundle = BUNDLES[name]
    for config in CONFIGS:
        assert (bundle / "configs" / config).is_file(), config
    for path in ("LICENSE", "docs/README.md", "models"):
        assert (bundle / path).exists(), path
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert list(fmt["inputs"]) == ["image"] and list(fmt["outputs"]) == ["pred"]  # MONAI Label reads the first keys
    assert fmt["outputs"]["pred"]["channel_def"] == CHANNELS[name]
    assert fmt["outputs"]["pred"]["num_channels"] == len(CHANNELS[name])
    assert "monai-mixedfocal" in meta["required_packages_version"]
    assert meta["version"] in meta["changelog"]


def test_the_class_weights_config_of_the_docs_adds_its_logger_and_keeps_the_loss_settings(tmp_path: Path) -> None:
    """docs/losses_beyond.md's config file, read after train.json as ``monai.bundle run`` reads config files: the
    logger is one more training handler, and the loss keeps the bundle's one-hot targets with running weights. The
    docs' first version (a top-level ``train_handlers`` list) was read without error and attached nothing."""
    text = (REPO / "docs" / "losses_beyond.md").read_text()
    block = re.search(r'```json\n(\{\n  "loss": "sigmoid_focal".*?)```', text, re.DOTALL)
    assert block is not None, "the class-weights config file is no longer in docs/losses_beyond.md"
    overlay = tmp_path / "class_weights.json"
    overlay.write_text(block.group(1))
    train = BUNDLES["kits19"] / "configs" / "train.json"
    parser, default = ConfigParser(), ConfigParser()
    parser.read_config([str(train), str(overlay)])
    default.read_config(str(train))
    handlers = parser.get("train#handlers")
    assert len(handlers) == len(default.get("train#handlers")) + 1
    assert isinstance(parser.get_parsed_content(f"train#handlers#{len(handlers) - 1}"), ClassWeightsLogger)
    loss = parser.get_parsed_content("loss_function")
    assert isinstance(loss, SigmoidFocalLoss) and loss.sigmoid and loss.to_onehot_y
    assert type(loss.class_weights).__name__ == "RunningClassWeights"


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_the_network_is_built_at_start_after_the_seed_is_set(name: str) -> None:
    """Built in initialize (a misspelled --network_def#... fails before the caching), but after set_determinism: built
    before it, its initial weights were unseeded and a resumed run no longer ended with the uninterrupted run's
    weights (test_bundle_cli's resume test caught it)."""
    steps = json.loads((BUNDLES[name] / "configs" / "train.json").read_text())["initialize"]
    seed = next(i for i, step in enumerate(steps) if "set_determinism" in step)
    assert steps.index("$@network_def") > seed
    assert all("@network" not in step for step in steps[:seed])


def test_schema_rejects_incomplete_metadata(tmp_path: Path) -> None:
    meta = json.loads((BUNDLES["kits19"] / "configs" / "metadata.json").read_text())
    del meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="channel_def"):
        verify_metadata(meta_file=str(broken), filepath=str(SCHEMA))


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_network_in_out(name: str) -> None:
    configs = BUNDLES[name] / "configs"
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.json"),
        n=1,
        device="cpu",
    )


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_inference_config_is_monai_label_ready(name: str) -> None:
    text = (BUNDLES[name] / "configs" / "inference.json").read_text()
    assert "_meta_" not in text  # MONAI Label parses inference.json without the metadata
    config = json.loads(text)
    for key in ("network_def", "preprocessing", "postprocessing", "inferer"):
        assert key in config
    train = json.loads((BUNDLES[name] / "configs" / "train.json").read_text())
    assert config["network_def"] == train["network_def"]
    assert train["training"] == "%run" and "run" in train  # `run training` and MONAI Label's `run`


def test_workflow_properties(dataset: tuple[str, Path], tmp_path: Path) -> None:
    name, root = dataset
    train_override = overrides(name, dataset_dir=str(root), bundle_root=str(tmp_path))
    write_model_file(tmp_path)  # a training's, read at the start of the evaluation and the inference
    for files in (["train.json"], ["train.json", "evaluate.json"]):  # multi_gpu_train.json: see test_bundle_cli
        workflow = bundle_workflow(name, files, "train", **train_override)
        workflow.initialize()
        assert workflow.check_properties() == [], files
    infer = bundle_workflow(
        name, ["inference.json"], "infer", dataset_dir=str(root), bundle_root=str(tmp_path), num_workers=0
    )
    infer.initialize()
    assert infer.check_properties() == []
    assert len(infer.dataset) == 6  # every image of the data set


def test_training_components(dataset: tuple[str, Path], tmp_path: Path) -> None:
    name, root = dataset
    workflow = bundle_workflow(
        name, ["train.json"], "train", **overrides(name, dataset_dir=str(root), bundle_root=str(tmp_path))
    )
    workflow.initialize()
    parser = workflow.parser
    train, val = parser.get_parsed_content("datasplit")
    assert len(train) == 4 and len(val) == 2 and not {c["case"] for c in train} & {c["case"] for c in val}
    trainer = parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch_length == parser.get_parsed_content("iterations_per_epoch")
    assert type(parser.get_parsed_content("loss_function")).__name__ == "MixedFocalLoss"
    sample = parser.get_parsed_content("train#dataset")[0]  # one random patch of the paper's pipeline
    assert tuple(sample["image"].shape) == (1, *TINY_PATCH[name])
    assert set(torch.unique(sample["label"]).tolist()) <= set(range(len(CHANNELS[name])))
    evaluator = parser.get_parsed_content("validate#evaluator")
    assert evaluator.inferer.mode == "gaussian" and evaluator.inferer.overlap == 0.5


def test_the_cache_keeps_uint8_labels_and_every_training_patch_has_a_float32_label(
    dataset: tuple[str, Path], tmp_path: Path
) -> None:
    """The cached label is uint8 (the cache holds 5 bytes per voxel instead of 8). A training patch's label is float32
    whether or not the spatial augmentations ran (MONAI's RandRotated returns float32 either way), so that a batch
    mixing the two can be stacked and the loss gets what it got before; the validation's whole uint8 volumes go to the
    loss as they are, with the float32 label's value."""
    name, root = dataset
    for aug_prob in (0.0, 1.0):
        values = overrides(name, dataset_dir=str(root), bundle_root=str(tmp_path), aug_prob=aug_prob)
        workflow = bundle_workflow(name, ["train.json"], "train", **values)
        workflow.initialize()
        parser = workflow.parser
        patch = parser.get_parsed_content("train#dataset")[0]
        assert patch["label"].dtype == torch.float32 and set(torch.unique(patch["label"]).tolist()) <= {0.0, 1.0, 2.0}
    first = parser.get_parsed_content("datasplit")[0][0]
    cached = Compose(parser.get_parsed_content("train#deterministic_transforms"))(dict(first))
    assert cached["image"].dtype == torch.float32 and cached["label"].dtype == torch.uint8
    volume = parser.get_parsed_content("validate#dataset")[0]["label"]
    assert volume.dtype == torch.uint8
    logits = torch.randn(1, len(CHANNELS[name]), *volume.shape[1:])
    loss = parser.get_parsed_content("loss_function")
    assert loss(logits, volume[None]) == loss(logits, volume[None].float())


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"loss": "not_a_loss"}, ["--loss 'not_a_loss'", *LOSS_NAMES]),
        ({"fold": 7}, ["--fold 7", "fold must be an integer in 0..2"]),
        ({"dataset_dir": "EMPTY"}, ["--dataset_dir", "folders "]),
    ],
    ids=["unknown-loss", "fold-out-of-range", "empty-dataset-dir"],
)
def test_bad_start_fails_in_initialize(dataset: tuple[str, Path], tmp_path: Path, override, expected) -> None:
    name, root = dataset
    values = overrides(name, dataset_dir=str(root), bundle_root=str(tmp_path / "run"))
    values.update(override)
    if values["dataset_dir"] == "EMPTY":
        values["dataset_dir"] = str(tmp_path / "empty")
        (tmp_path / "empty").mkdir()
    workflow = bundle_workflow(name, ["train.json"], "train", **values)
    with pytest.raises(Exception) as info:  # MONAI wraps the error; its cause chain is checked below
        workflow.initialize()
    message = error_chain(info.value)
    for text in expected:
        assert text in message, message
    assert not (tmp_path / "run").exists()  # nothing cached, trained or written


def test_an_interrupted_run_of_other_settings_stops_training_but_not_evaluation(
    dataset: tuple[str, Path], tmp_path: Path
) -> None:
    """last.json of an interrupted run with another loss: a training here stops in initialize (nothing cached), an
    evaluation (which trains nothing) of the same split goes on."""
    name, root = dataset
    values = overrides(name, dataset_dir=str(root), bundle_root=str(tmp_path))
    recorded = run_settings(root, None, 0, values["num_folds"], 0, "dice", {"softmax": True, "to_onehot_y": True}, 0)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"an interrupted run")
    record = {"run_settings": recorded, "epoch": 1, "max_epochs": 4}
    (tmp_path / "checkpoints" / "last.json").write_text(json.dumps(record))
    with pytest.raises(Exception) as info:
        bundle_workflow(name, ["train.json"], "train", **values, epochs=4).initialize()
    expected = "holds another run, interrupted after epoch 1 of 4 (loss: 'dice' -> 'mixed_focal')"
    assert expected in error_chain(info.value)
    write_model_file(tmp_path)
    bundle_workflow(name, ["train.json", "evaluate.json"], "train", **values, epochs=4).initialize()


def test_a_resume_or_an_evaluation_with_another_network_is_refused_at_start(
    dataset: tuple[str, Path], tmp_path: Path
) -> None:
    """Against the bug (the network not among the run settings): another ``--network_def#features`` failed with
    PyTorch's ``size mismatch`` after every case was cached, and another ``--network_def#act`` resumed, or was
    evaluated, without a word in a network the weights were not trained in."""
    name, root = dataset
    values = overrides(name, dataset_dir=str(root), bundle_root=str(tmp_path), epochs=4)
    recorded = bundle_workflow(name, ["train.json"], "train", **values).parser.get_parsed_content("run_settings")
    assert "BasicUNet" in json.loads(recorded["network"])
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"an interrupted run")
    record = {"run_settings": recorded, "epoch": 1, "max_epochs": 4}
    (tmp_path / "checkpoints" / "last.json").write_text(json.dumps(record))
    changes = [("network_def#act", "prelu", ("relu", "prelu")), ("network_def#dropout", 0.1, ("p=0.0", "p=0.1"))]
    for change, value, shown in changes:
        with pytest.raises(Exception) as info:
            bundle_workflow(name, ["train.json"], "train", **values, **{change: value}).initialize()
        message = error_chain(info.value)
        assert "holds another run, interrupted after epoch 1 of 4 (network: " in message, message
        assert all(text in message.lower() for text in shown), message
        with pytest.raises(Exception) as info:
            bundle_workflow(name, ["train.json", "evaluate.json"], "train", **values, **{change: value}).initialize()
        message = error_chain(info.value)
        assert "trained with another network (network: " in message and "--network_def" in message, message
    write_model_file(tmp_path)
    bundle_workflow(name, ["train.json", "evaluate.json"], "train", **values).initialize()  # the same network


def test_an_image_pattern_that_matches_labels_or_other_modalities_is_refused(
    dataset: tuple[str, Path], tmp_path: Path
) -> None:
    """Against the bug (any matching file segmented): ``--image_pattern "**/*.nii*"`` segmented KiTS19's
    segmentations as CT scans, BraTS20's segmentations and FLAIR, T1 and T2 images as T1-CE."""
    name, root = dataset
    default = bundle_workflow(name, ["inference.json"], "infer", dataset_dir=str(root), bundle_root=str(tmp_path))
    images = default.parser.get_parsed_content("images")
    assert images and all(Path(image).name.startswith(("imaging", "BraTS20")) for image in images)
    assert not any(part in Path(image).name for image in images for part in ("seg", "flair", "_t1.", "_t2."))
    broad = bundle_workflow(
        name, ["inference.json"], "infer", dataset_dir=str(root), bundle_root=str(tmp_path), image_pattern="**/*.nii*"
    )
    with pytest.raises(Exception) as info:
        broad.parser.get_parsed_content("images")
    message = error_chain(info.value)
    assert "--image_pattern '**/*.nii*' also matches" in message and "not images this network takes" in message


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_tracking_mlflow_patches_both_engines(name: str, tmp_path: Path) -> None:
    """``--tracking mlflow`` (MONAI's patch) needs list literals at train#handlers and validate#handlers."""
    workflow = bundle_workflow(name, ["train.json"], "train", bundle_root=str(tmp_path), tracking="mlflow")
    for handlers in ("train#handlers", "validate#handlers"):
        assert workflow.parser[handlers][-1]["_target_"] == "MLFlowHandler"
    assert list((tmp_path / "eval").glob("config_*.json"))  # the executed config, logged as an artifact


def test_monai_label_data_without_a_dataset_dir(dataset: tuple[str, Path], tmp_path: Path) -> None:
    """MONAI Label gives ``train#dataset#data`` and ``validate#dataset#data`` from its datastore and no ``dataset_dir``:
    nothing in training may list the default ``dataset_dir`` (the training images are recorded from the data given)."""
    from monai_mixedfocal.bundle import ResumeCheckpoint
    from monai_mixedfocal.bundle.run_settings import training_images

    name, root = dataset
    listed = bundle_workflow(
        name, ["train.json"], "train", **overrides(name, dataset_dir=str(root), bundle_root=str(tmp_path))
    )
    train, val = listed.parser.get_parsed_content("datasplit")
    given = {"train#dataset#data": train[:3], "validate#dataset#data": val, "dataset_dir": str(tmp_path / "none")}
    workflow = bundle_workflow(
        name, ["train.json"], "train", **overrides(name, bundle_root=str(tmp_path / "ml"), **given)
    )
    workflow.initialize()
    handlers = workflow.parser.get_parsed_content("train#handlers")
    (resume,) = [handler for handler in handlers if isinstance(handler, ResumeCheckpoint)]
    assert resume.training_images == training_images(train[:3]) and len(resume.training_images) == 3


@pytest.mark.parametrize("name", ["kits19", "brats20"])
def test_spatial_augmentations_resample_the_label_with_nearest(name: str) -> None:
    """Against the bug (RandRotated's label mode "bilinear"): with aug_prob 0.15 one sampled patch rarely shows it, so
    the config is checked: every augmentation with a mode resamples the label by nearest neighbour."""

    parser = ConfigParser()
    parser.read_config(str(BUNDLES[name] / "configs" / "train.json"))
    checked = 0
    for raw in parser["train#augmentation"]:
        keys = [raw["keys"]] if isinstance(raw["keys"], str) else list(raw["keys"])
        if "mode" in raw and "label" in keys:
            modes = [raw["mode"]] * len(keys) if isinstance(raw["mode"], str) else list(raw["mode"])
            assert modes[keys.index("label")] == "nearest", raw["_target_"]
            checked += 1
    assert checked >= 2  # RandRotated and Rand3DElastic


@pytest.mark.parametrize("name", ["kits19", "brats20"])
@pytest.mark.parametrize(("config", "inferer"), [("train.json", "validate#inferer"), ("inference.json", "inferer")])
def test_sliding_window_batch_is_one_window_on_the_cpu_and_four_on_a_gpu(name: str, config: str, inferer: str) -> None:
    """One window per network call on the CPU, where it was as fast as four and needed a third of the memory
    (docs/bundles.md); four on a GPU. The default follows ``device``, so ``--device cpu`` on a GPU machine gets 1.
    ``--device cpu`` (and MONAI Label's training request) gives a string, the config's default a torch.device."""
    devices = {"$torch.device('cpu')": 1, "$torch.device('cuda:0')": 4, "cpu": 1, "cuda": 4, "cuda:1": 4}
    for device, expected in devices.items():
        parser = ConfigParser()
        parser.read_config(str(BUNDLES[name] / "configs" / config))
        parser["device"] = device
        assert parser.get_parsed_content(inferer).sw_batch_size == expected


@pytest.mark.parametrize("name", ["kits19", "brats20"])
def test_the_recorded_training_options_cover_what_a_resume_would_ignore(name: str) -> None:
    """Against the bug (patch_size dropped from training_options): a resume with another patch size then trained on
    without a word. The options that the checkpoint's states would override or that change the patches are all
    recorded."""

    parser = ConfigParser()
    parser.read_config(str(BUNDLES[name] / "configs" / "train.json"))
    options = parser["training_options"]
    needed = {"learning_rate", "min_learning_rate", "lr_factor", "lr_patience", "iterations_per_epoch", "batch_size",
              "patch_size", "patch_sampling", "crop_ratios", "aug_prob"}  # fmt: skip
    assert needed <= set(options) and all(options[key] == f"@{key}" for key in needed)


@pytest.mark.parametrize("name", ["kits19", "brats20"])
def test_model_pt_keeps_the_lowest_validation_loss(name: str, tmp_path: Path) -> None:
    """Against the bug (metric_cmp_fn ``>``) and (key_metric_negative_sign false): only the slow CLI test noticed a
    bundle that kept the model of the HIGHEST validation loss."""
    from types import SimpleNamespace

    parser = ConfigParser()
    parser.read_config(str(BUNDLES[name] / "configs" / "train.json"))
    parser["bundle_root"] = str(tmp_path)
    saver = parser.get_parsed_content("validate#handlers#0")
    score = saver._key_metric_checkpoint.score_function
    low, high = (SimpleNamespace(state=SimpleNamespace(metrics={"val_loss": v})) for v in (0.2, 0.3))
    assert score(low) > score(high)  # Ignite keeps the highest score
    compare = parser.get_parsed_content("validate#evaluator#metric_cmp_fn")
    assert compare(0.2, 0.3) and not compare(0.3, 0.2)  # lower validation loss is the better one


@pytest.fixture(scope="module")
def kits_data(tmp_path_factory) -> Path:
    return make_data("kits19", tmp_path_factory.mktemp("kits19"), cases=6)


def test_the_training_loader_shuffles_and_is_seeded_by_seed(kits_data: Path, tmp_path: Path) -> None:
    """Against the bug (shuffle false) and (EpochSeededData's seed not @seed): --seed chooses the training data."""
    from torch.utils.data import RandomSampler

    workflow = bundle_workflow(
        "kits19", ["train.json"], **overrides("kits19", dataset_dir=str(kits_data), bundle_root=str(tmp_path)), seed=5
    )
    workflow.initialize()
    (seeded,) = [h for h in workflow.parser.get_parsed_content("train#handlers") if isinstance(h, EpochSeededData)]
    assert seeded.seed == 5 and isinstance(seeded.loader.sampler, RandomSampler)


def test_the_evaluation_refuses_another_fold_of_the_trained_data_at_start(kits_data: Path, tmp_path: Path) -> None:
    """Against the bug (evaluate.json without check_evaluation_split): a model trained on fold 1 evaluated on fold 0 of
    the same data; only the slow CLI test noticed."""

    values = overrides("kits19", dataset_dir=str(kits_data), bundle_root=str(tmp_path))
    recorded = run_settings(
        kits_data, None, 1, values["num_folds"], 0, "mixed_focal", {"softmax": True, "to_onehot_y": True}, 0
    )
    (tmp_path / "checkpoints").mkdir()
    record = {"run_settings": recorded, "epoch": 4, "max_epochs": 4}
    (tmp_path / "checkpoints" / "last.json").write_text(json.dumps(record))
    with pytest.raises(Exception) as info:
        bundle_workflow("kits19", ["train.json", "evaluate.json"], **values, fold=0).initialize()
    assert "trained on the same data with another split (fold: '1' -> '0'" in error_chain(info.value)


def test_resume_false_reaches_the_resume_checkpoint_handler(kits_data: Path, tmp_path: Path) -> None:
    """Against the bug (the handler's resume fixed to true): --resume False passed check_resume at start, and the
    handler then resumed the checkpoint it was told to overwrite."""

    values = overrides("kits19", dataset_dir=str(kits_data), bundle_root=str(tmp_path))
    for resume in (False, True):
        workflow = bundle_workflow("kits19", ["train.json"], **values, resume=resume)
        workflow.initialize()
        (handler,) = [
            h for h in workflow.parser.get_parsed_content("train#handlers") if isinstance(h, ResumeCheckpoint)
        ]
        assert handler.resume is resume
