# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""ResumeCheckpoint: an interrupted run resumes where it stopped, with the best-model history, and only then; its run
settings live inside last.pt; a missing best model or an unreadable checkpoint is named, not a torch traceback."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import monai
import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from monai_mixedfocal.bundle import (
    AtomicCheckpointSaver,
    ResumeCheckpoint,
    check_evaluation_split,
    check_resume,
    run_settings,
)
from monai_mixedfocal.bundle.run_settings import (
    checkpoint_progress,
    recorded_progress,
    trainer_epochs,
    training_images,
)

# the validation loss after each epoch: epoch 2 is the best; after an interruption at epoch 3, epoch 4 is worse
VAL_LOSSES = [0.5, 0.3, 0.4, 0.45, 0.35]


class _Run:
    """A small real training loop: a linear model whose weights record the epoch, a validator, the best saver."""

    def __init__(
        self,
        ckpt_dir: Path,
        max_epochs: int,
        stop_after: int | None = None,
        resume: bool = True,
        settings: dict[str, str] | None = None,
        saver_class: type[CheckpointSaver] = AtomicCheckpointSaver,
        training_data: list[dict[str, str]] | None = None,
    ) -> None:
        self.model = torch.nn.Linear(2, 1)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.1)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, patience=0)
        self.epochs_run: list[int] = []
        self.max_epochs = max_epochs

        def step(engine: Engine, batch: torch.Tensor) -> float:
            self.optimizer.zero_grad()
            loss = self.model(batch).pow(2).mean()
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                self.model.bias.fill_(engine.state.epoch)  # which epoch's weights a checkpoint holds
            return loss.item()

        self.trainer = Engine(step)
        self.validator = Engine(lambda engine, batch: None)

        @self.validator.on(Events.EPOCH_COMPLETED)
        def set_loss(engine: Engine) -> None:
            engine.state.metrics["val_loss"] = VAL_LOSSES[self.trainer.state.epoch - 1]

        self.saver = saver_class(
            save_dir=str(ckpt_dir),
            save_dict={"model": self.model},
            save_key_metric=True,
            key_metric_name="val_loss",
            key_metric_negative_sign=True,
            key_metric_filename="model.pt",
        )
        self.saver.attach(self.validator)

        @self.trainer.on(Events.EPOCH_COMPLETED)
        def validate(engine: Engine) -> None:
            self.validator.run([0])
            self.scheduler.step(self.validator.state.metrics["val_loss"])
            self.epochs_run.append(engine.state.epoch)

        self.handler = ResumeCheckpoint(
            ckpt_dir / "last.pt",
            {"model": self.model, "optimizer": self.optimizer, "lr_scheduler": self.scheduler, "best": self.saver},
            resume=resume,
            run_settings=settings,
            training_data=training_data,
        )
        self.handler.attach(self.trainer)
        if stop_after is not None:
            self.trainer.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda e: e.terminate())

    def run(self) -> None:
        self.trainer.run([torch.ones(2)] * 3, max_epochs=self.max_epochs)


def _model_bias(path: Path) -> float:
    return torch.load(path, weights_only=True)["bias"].item()


def test_interrupted_run_resumes_with_its_best_model_history(tmp_path: Path) -> None:
    first = _Run(tmp_path, max_epochs=5, stop_after=3)
    first.run()
    assert first.epochs_run == [1, 2, 3]
    assert _model_bias(tmp_path / "model.pt") == 2.0  # lowest validation loss so far
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(saved) == {"model", "optimizer", "lr_scheduler", "best", "trainer"}
    assert saved["trainer"]["iteration"] == 9 and saved["trainer"]["epoch_length"] == 3  # 3 epochs done

    second = _Run(tmp_path, max_epochs=5)
    second.run()
    assert second.epochs_run == [4, 5]  # continued, not started over
    assert second.trainer.state.iteration == 15
    # epoch 4 (0.45) did not replace the best model of epoch 2 (0.3): the saver's history was restored
    assert _model_bias(tmp_path / "model.pt") == 2.0
    assert second.optimizer.state_dict()["state"][0]["step"].item() == 15  # Adam's moments came back too
    assert second.scheduler.state_dict()["best"] == 0.3


def test_without_the_history_a_resumed_run_would_lose_the_best_model(tmp_path: Path) -> None:
    """The pitfall the handler exists for: a fresh CheckpointSaver overwrites model.pt at its first validation."""
    _Run(tmp_path, max_epochs=5, stop_after=3).run()
    second = _Run(tmp_path, max_epochs=5)
    second.handler.save_dict.pop("best")
    second.run()
    assert _model_bias(tmp_path / "model.pt") == 5.0


def test_a_monai_without_the_private_best_score_list_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The best-score list is MONAI's private ``CheckpointSaver._key_metric_checkpoint``: a MONAI without it fails the
    run at its start with an error naming the MONAI version and the attribute (not the bundle's saver settings); a
    saver without a best model (``save_key_metric=False``) is the configuration's error."""
    run = _Run(tmp_path, max_epochs=2)
    monkeypatch.delattr(run.saver, "_key_metric_checkpoint")
    message = rf"installed MONAI {re.escape(monai.__version__)} has no CheckpointSaver\._key_metric_checkpoint"
    with pytest.raises(RuntimeError, match=message):
        run.run()
    assert run.epochs_run == [] and not (tmp_path / "last.pt").exists()
    run = _Run(tmp_path, max_epochs=2)
    monkeypatch.setattr(run.saver, "_key_metric_checkpoint", None)  # as MONAI sets it for save_key_metric=False
    with pytest.raises(ValueError, match="must have save_key_metric=True"):
        run.run()


@pytest.mark.parametrize(
    ("first_epochs", "stop_after", "second_epochs", "message"),
    [
        (2, None, 2, "is from a finished run (2 of 2 epochs; a finished run is not extended)"),
        (2, None, 4, "is from a finished run (2 of 2 epochs; a finished run is not extended)"),
        (4, 3, 2, "interrupted after epoch 3 of 4, and max_epochs=2 leaves nothing to resume"),
    ],
)
def test_finished_or_exhausted_runs_start_over(
    tmp_path: Path, first_epochs: int, stop_after: int | None, second_epochs: int, message: str, caplog
) -> None:
    _Run(tmp_path, max_epochs=first_epochs, stop_after=stop_after).run()
    best = (tmp_path / "model.pt").read_bytes()
    second = _Run(tmp_path, max_epochs=second_epochs)
    second.run()
    assert second.epochs_run == list(range(1, second_epochs + 1))
    assert message in caplog.text
    kept = tmp_path / "model_of_finished_run.pt"  # the finished run's best model survives the new run
    if stop_after is None:
        assert kept.read_bytes() == best and f"the finished run's model.pt is kept as {kept}" in caplog.text
        assert (tmp_path / "model.pt").read_bytes() != best  # replaced by the new run's, as MONAI Label expects
    else:
        assert not kept.exists()


@pytest.mark.parametrize("stop_after", [2, None], ids=["interrupted", "finished"])
def test_resume_false_starts_over_and_keeps_the_earlier_best_model(
    tmp_path: Path, stop_after: int | None, caplog
) -> None:
    """--resume false replaced models/model.pt at its first validation without a copy (a finished run started again
    without it kept one)."""
    _Run(tmp_path, max_epochs=4, stop_after=stop_after).run()
    best = (tmp_path / "model.pt").read_bytes()
    second = _Run(tmp_path, max_epochs=4, resume=False)
    second.run()
    assert second.epochs_run == [1, 2, 3, 4]
    kept = tmp_path / "model_of_finished_run.pt"
    assert kept.read_bytes() == best and f"the earlier run's model.pt is kept as {kept}" in caplog.text
    assert "--resume false: starting a new run over" in caplog.text


def test_resume_false_in_a_new_folder_copies_nothing(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"a model shipped with the bundle")  # no earlier run: nothing to keep
    _Run(tmp_path, max_epochs=2, resume=False).run()
    assert not (tmp_path / "model_of_finished_run.pt").exists()


def test_foreign_checkpoint_and_bad_arguments(tmp_path: Path) -> None:
    torch.save({"model": torch.nn.Linear(2, 1).state_dict()}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"cannot resume this run: it lacks \['best', 'lr_scheduler'"):
        _Run(tmp_path, max_epochs=2).run()
    with pytest.raises(ValueError, match="at least one object"):
        ResumeCheckpoint(tmp_path / "x.pt", {"model": None})
    with pytest.raises(ValueError, match="reserved"):
        ResumeCheckpoint(tmp_path / "x.pt", {"trainer": torch.nn.Linear(1, 1)})


def test_written_atomically(tmp_path: Path) -> None:
    _Run(tmp_path, max_epochs=2).run()
    names: Sequence[str] = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".lock", "last.pt", "model.pt"]  # no temporary file left behind (.lock: the training's lock)


def test_another_run_never_resumes_an_interrupted_one(tmp_path: Path) -> None:
    """Runs started in one folder: another fold or loss is refused (at start and by the handler), the same resumes."""
    fold0 = run_settings("/data/kits19", None, 0, 5, 0, "dice", {"softmax": True})
    fold1 = run_settings("/data/kits19", None, 1, 5, 0, "mixed_focal", {"softmax": True})
    _Run(tmp_path, max_epochs=4, stop_after=2, settings=fold0).run()
    recorded = (tmp_path / "last.json").read_text()
    assert '"fold": "0"' in recorded and '"epoch": 2' in recorded and '"max_epochs": 4' in recorded
    with pytest.raises(ValueError, match=r"another run, interrupted after epoch 2 of 4 \(fold: '0' -> '1'; loss"):
        check_resume(tmp_path / "last.pt", True, fold1, epochs=4)
    with pytest.raises(ValueError, match="--resume False"):
        _Run(tmp_path, max_epochs=4, settings=fold1).run()
    check_resume(tmp_path / "last.pt", False, fold1, epochs=4)  # starting over is allowed
    check_resume(tmp_path / "last.pt", True, fold0, epochs=4)
    again = _Run(tmp_path, max_epochs=4, settings=fold0)
    again.run()
    assert again.epochs_run == [3, 4]  # resumed, same settings
    check_resume(tmp_path / "last.pt", True, fold1, epochs=4)  # a finished run holds nothing to resume


def test_another_seed_never_resumes_an_interrupted_run(tmp_path: Path) -> None:
    """The seed chooses every epoch's training data: another seed is another run. A record without a seed (written
    before the seed was recorded) still resumes."""
    seed0 = run_settings("/data/kits19", None, 0, 5, 0, "dice", {}, seed=0)
    _Run(tmp_path, max_epochs=4, stop_after=2, settings=seed0).run()
    with pytest.raises(ValueError, match=r"interrupted after epoch 2 of 4 \(seed: '0' -> '1'\)"):
        check_resume(tmp_path / "last.pt", True, {**seed0, "seed": "1"}, epochs=4)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    del saved["run_settings"]["seed"]
    torch.save(saved, tmp_path / "last.pt")
    check_resume(tmp_path / "last.pt", True, {**seed0, "seed": "1"}, epochs=4)


def test_evaluation_on_another_fold_of_the_same_data_is_refused(tmp_path: Path) -> None:
    _Run(tmp_path, max_epochs=1, settings=run_settings("/data/kits19", None, 2, 5, 0, "dice")).run()
    with pytest.raises(ValueError, match=r"another split \(fold: '2' -> '0'.*Pass the training's --fold"):
        check_evaluation_split(tmp_path / "last.pt", run_settings("/data/kits19", None, 0, 5, 0, "dice"))
    check_evaluation_split(tmp_path / "last.pt", run_settings("/data/kits19", None, 2, 5, 0, "focal"))
    check_evaluation_split(tmp_path / "last.pt", run_settings("/data/external", None, 0, 5, 0, "dice"))  # other data
    check_evaluation_split(tmp_path / "none.pt", run_settings("/data/kits19", None, 0, 5, 0, "dice"))  # no record


def test_a_resume_with_other_training_options_or_loss_settings_is_refused(tmp_path: Path) -> None:
    """The learning rate would come back from the optimizer state, the patch size would silently change the run, and
    a ``_target_`` loss with other weights was recorded like the first (``str(module)`` omits them): all refused. A
    record without options (an older version) still resumes."""
    options = {"learning_rate": 3e-4, "patch_size": [160, 160, 80]}
    dice_ce = monai.losses.DiceCELoss(softmax=True, to_onehot_y=True)
    first = run_settings("/data/kits19", None, 0, 5, 0, dice_ce, {}, seed=0, options=options)
    _Run(tmp_path, max_epochs=4, stop_after=2, settings=first).run()
    for change, shown in [
        ({"options": {**options, "learning_rate": 0.05}}, r"learning_rate: '0.0003' -> '0.05'"),
        ({"options": {**options, "patch_size": [64, 64, 32]}}, r"patch_size: '\[160, 160, 80\]' -> '\[64, 64, 32\]'"),
        ({"loss": monai.losses.DiceCELoss(softmax=True, to_onehot_y=True, lambda_dice=5.0)}, r"loss: .*lambda_dice"),
        ({"loss": monai.losses.DiceCELoss(sigmoid=True, to_onehot_y=True)}, r"loss: "),
    ]:
        settings = run_settings(
            "/data/kits19",
            None,
            0,
            5,
            0,
            change.get("loss", dice_ce),
            {},
            seed=0,
            options=change.get("options", options),
        )
        with pytest.raises(ValueError, match=r"interrupted after epoch 2 of 4 \(.*" + shown):
            check_resume(tmp_path / "last.pt", True, settings, epochs=4)
    check_resume(tmp_path / "last.pt", True, dict(first), epochs=4)
    check_resume(tmp_path / "last.pt", True, {**first, "aug_prob": "0.5"}, epochs=4)  # not recorded then: resumes
    with pytest.raises(ValueError, match=r"options \['fold'\] clash"):
        run_settings("/data/kits19", None, 0, 5, 0, "dice", options={"fold": 1})
    with pytest.raises(ValueError, match=r"options \['recorded_in'\] clash .* the folder that a resume checkpoint"):
        run_settings("/data/kits19", None, 0, 5, 0, "dice", options={"recorded_in": "/elsewhere"})


def test_evaluation_on_training_cases_is_refused_however_the_data_are_named(tmp_path: Path) -> None:
    """The training images are recorded by their real paths: the same cases reached through a link, or listed from a
    datalist instead of the folder (other settings strings), are still refused; other cases pass."""
    data = tmp_path / "kits19" / "data"
    images = [data / f"case_{i:05d}" / "imaging.nii.gz" for i in range(4)]
    for image in images:
        image.parent.mkdir(parents=True)
        image.write_bytes(b"")
    (tmp_path / "link").symlink_to(data)
    trained = [{"image": str(image)} for image in images[:3]]
    _Run(tmp_path / "run", max_epochs=1, settings=FOLD0, training_data=trained).run()
    assert json.loads((tmp_path / "run" / "last.json").read_text())["training_images"] == [str(i) for i in images[:3]]
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["training_images"] == [
        str(i) for i in images[:3]
    ]
    via_link = [{"image": str(tmp_path / "link" / "case_00002" / "imaging.nii.gz")}, {"image": str(images[3])}]
    other_names = run_settings(str(tmp_path / "link"), str(tmp_path / "datalist.json"), 1, 5, 0, "dice")
    with pytest.raises(
        ValueError, match=rf"1 of the 2 evaluation case\(s\) are training cases .* e\.g\. {images[2]}: "
    ):
        check_evaluation_split(tmp_path / "run" / "last.pt", other_names, via_link)
    check_evaluation_split(tmp_path / "run" / "last.pt", other_names, [{"image": str(images[3])}])
    check_evaluation_split(tmp_path / "run" / "last.pt", FOLD0, [{"image": str(images[3])}])  # the images decide
    (tmp_path / "run" / "last.pt").unlink()  # last.json records them too
    with pytest.raises(ValueError, match=r"1 of the 2 evaluation case\(s\) are training cases"):
        check_evaluation_split(tmp_path / "run" / "last.pt", other_names, via_link)


@pytest.mark.parametrize("through_a_link", [False, True])
def test_a_run_folder_moved_with_its_datalist_resumes_there(tmp_path: Path, through_a_link: bool) -> None:
    """Against the bug (absolute paths compared as they were recorded): a study folder moved or copied elsewhere
    (from scratch space to a project folder, say) held an interrupted run that refused to resume there, its datalist
    named at the new path; also when it was reached through a link (its paths recorded by name). A data set that
    stayed where it was, and a datalist that did not move along, decide as before; so does another data set at the
    old one's place relative to the run (the study copied beside it)."""
    if through_a_link:
        (tmp_path / "real").mkdir()
        (tmp_path / "scratch").symlink_to(tmp_path / "real")
    data, old = tmp_path / "data", tmp_path / "scratch" / "study"
    data.mkdir()
    recorded = run_settings(str(data), str(old / "datalist.json"), 0, 5, 0, "dice", seed=0)
    _Run(old / "runs" / "dice" / "fold_0", max_epochs=4, stop_after=2, settings=recorded).run()
    new = tmp_path / "home" / "me" / "study"
    new.parent.mkdir(parents=True)
    shutil.move(tmp_path / ("real" if through_a_link else "scratch") / "study", new)
    checkpoint = new / "runs" / "dice" / "fold_0" / "last.pt"
    for dataset_dir, datalist, shown in [
        (data, tmp_path / "home" / "datalist.json", "datalist: "),  # another datalist, not the moved one
        (tmp_path / "home" / "me" / "data", new / "datalist.json", "dataset_dir: "),  # the data did not move along
        (tmp_path / "home" / "data", new / "datalist.json", "dataset_dir: "),  # at the same place relative to the run
    ]:
        other = run_settings(str(dataset_dir), str(datalist), 0, 5, 0, "dice", seed=0)
        with pytest.raises(ValueError, match=r"interrupted after epoch 2 of 4 \(" + shown):
            check_resume(checkpoint, True, other, epochs=4)
    moved = run_settings(str(data), str(new / "datalist.json"), 0, 5, 0, "dice", seed=0)
    check_resume(checkpoint, True, moved, epochs=4)
    again = _Run(checkpoint.parent, max_epochs=4, settings=moved)
    again.run()
    assert again.epochs_run == [3, 4]  # resumed


@pytest.mark.parametrize("through_a_link", [False, True])
def test_a_copied_run_folder_still_refuses_its_training_cases(tmp_path: Path, through_a_link: bool) -> None:
    """Against the bug (recorded image paths compared as they were): in a copy of a study folder holding its data,
    the model's training cases, at their new paths, were evaluated as if unseen; also when the study was reached
    through a link (the images are recorded by their real paths, so is the folder they were recorded in)."""
    if through_a_link:
        (tmp_path / "real").mkdir()
        (tmp_path / "scratch").symlink_to(tmp_path / "real")
    old = tmp_path / "scratch" / "study"
    images = [old / "data" / f"case_{i:05d}" / "imaging.nii.gz" for i in range(4)]
    for image in images:
        image.parent.mkdir(parents=True)
        image.write_bytes(b"")
    settings = run_settings(str(old / "data"), str(old / "datalist.json"), 0, 2, 0, "dice")
    trained = [{"image": str(image)} for image in images[:2]]
    _Run(old / "run", max_epochs=1, settings=settings, training_data=trained).run()
    new = tmp_path / "copy"
    shutil.copytree(tmp_path / "scratch", new)
    shutil.rmtree(tmp_path / ("real" if through_a_link else "scratch"))
    copied = [str(new / image.relative_to(tmp_path / "scratch")) for image in images]
    settings = run_settings(str(new / "study" / "data"), str(new / "study" / "datalist.json"), 1, 2, 0, "dice")
    with pytest.raises(ValueError, match=rf"1 of the 2 evaluation case\(s\) are training cases .* e\.g\. {copied[1]}:"):
        check_evaluation_split(new / "study" / "run" / "last.pt", settings, [{"image": p} for p in copied[1:3]])
    check_evaluation_split(new / "study" / "run" / "last.pt", settings, [{"image": p} for p in copied[2:]])


def test_a_moved_run_folder_does_not_refuse_cases_outside_what_moved(tmp_path: Path) -> None:
    """Against the false refusal: a study moved from scratch/study to home/me/study, its data set left in data/: an
    external set at home/data (the old data's place relative to the run) held no training case of the model."""
    data, old = tmp_path / "data", tmp_path / "scratch" / "study"
    trained = [{"image": str(data / f"case_{i:05d}" / "imaging.nii.gz")} for i in range(2)]
    settings = run_settings(str(data), str(old / "datalist.json"), 0, 2, 0, "dice")
    _Run(old / "runs" / "dice" / "fold_0", max_epochs=1, settings=settings, training_data=trained).run()
    new = tmp_path / "home" / "me" / "study"
    new.parent.mkdir(parents=True)
    shutil.move(old, new)
    checkpoint = new / "runs" / "dice" / "fold_0" / "last.pt"
    external = [{"image": str(tmp_path / "home" / "data" / f"case_{i:05d}" / "imaging.nii.gz")} for i in range(2)]
    check_evaluation_split(checkpoint, run_settings(str(tmp_path / "home" / "data"), None, 0, 2, 0, "dice"), external)
    with pytest.raises(ValueError, match=r"2 of the 2 evaluation case\(s\) are training cases"):
        check_evaluation_split(checkpoint, run_settings(str(data), None, 1, 2, 0, "dice"), trained)


FOLD0 = run_settings("/data/kits19", None, 0, 5, 0, "dice", {"softmax": True})
FOLD1 = run_settings("/data/kits19", None, 1, 5, 0, "dice", {"softmax": True})


@pytest.mark.parametrize("saver_class", [CheckpointSaver, AtomicCheckpointSaver])
@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_missing_best_model_is_written_again_at_the_next_validation(
    tmp_path: Path, saver_class: type[CheckpointSaver], damage: str
) -> None:
    """model.pt gone (a kill between Ignite's remove and the write, or a user) or unreadable: resuming drops it from
    the best-model history with a warning (MONAI's saver would fail to remove it at every rerun, the atomic one would
    never write it again unless a validation beats the lost score) and writes the next validation's model."""
    _Run(tmp_path, max_epochs=5, stop_after=3, saver_class=saver_class).run()
    model = tmp_path / "model.pt"
    if damage == "deleted":
        model.unlink()
    else:
        model.write_bytes(model.read_bytes()[:100])
    second = _Run(tmp_path, max_epochs=5, saver_class=saver_class)
    problem = "is missing" if damage == "deleted" else "cannot be read"
    with pytest.warns(UserWarning, match=rf"model\.pt, the best model recorded in .*last\.pt, {problem}"):
        second.run()
    assert second.epochs_run == [4, 5]
    assert _model_bias(model) == 5.0  # written at epoch 4 (0.45, the first validation left), replaced at 5 (0.35)


@pytest.mark.parametrize("saver_class", [CheckpointSaver, AtomicCheckpointSaver])
def test_a_missing_best_model_does_not_fail_the_next_better_validation(
    tmp_path: Path, saver_class: type[CheckpointSaver]
) -> None:
    """The audit's case: MONAI's saver removed the missing model.pt at the first better validation after resuming and
    failed with FileNotFoundError, at every rerun."""
    _Run(tmp_path, max_epochs=3, stop_after=1, saver_class=saver_class).run()
    (tmp_path / "model.pt").unlink()
    second = _Run(tmp_path, max_epochs=3, saver_class=saver_class)
    with pytest.warns(UserWarning, match="is missing"):
        second.run()
    assert second.epochs_run == [2, 3] and _model_bias(tmp_path / "model.pt") == 2.0


def test_the_run_settings_are_kept_inside_last_pt(tmp_path: Path) -> None:
    """With the folder they were written in, which tells a moved run folder from another run."""
    _Run(tmp_path, max_epochs=4, stop_after=2, settings=FOLD0).run()
    recorded = {**FOLD0, "recorded_in": str(tmp_path), "recorded_in_real": str(tmp_path)}
    assert torch.load(tmp_path / "last.pt", weights_only=True)["run_settings"] == recorded
    assert json.loads((tmp_path / "last.json").read_text())["run_settings"] == recorded  # the copy to read


@pytest.mark.parametrize("last_json", ["missing", "garbage", "truncated", "a folder"])
def test_an_unreadable_last_json_does_not_turn_off_the_checks(tmp_path: Path, last_json: str) -> None:
    """The settings are read from last.pt (one atomic file): last.json lost (a kill between the two writes) or damaged
    changes nothing: another fold neither resumes the run nor evaluates its model."""
    _Run(tmp_path, max_epochs=4, stop_after=2, settings=FOLD0).run()
    record = tmp_path / "last.json"
    text = record.read_text()
    record.unlink()
    if last_json == "garbage":
        record.write_bytes(b"\x00\xff{")
    elif last_json == "truncated":
        record.write_text(text[: len(text) // 2])
    elif last_json == "a folder":
        record.mkdir()
    _assert_fold1_refused(tmp_path, epochs=4)
    if last_json == "a folder":
        record.rmdir()
    again = _Run(tmp_path, max_epochs=4, settings=FOLD0)
    again.run()
    assert again.epochs_run == [3, 4]


def test_the_progress_is_read_from_last_pt_first(tmp_path: Path) -> None:
    """last.pt is written before its copy last.json: a kill between the two leaves last.json one epoch behind, and a
    finished run would look interrupted. An older last.pt (no settings inside) or an unreadable one defers to it."""
    _Run(tmp_path, max_epochs=3, settings=FOLD0).run()
    record = tmp_path / "last.json"
    recorded = {**FOLD0, "recorded_in": str(tmp_path), "recorded_in_real": str(tmp_path)}
    assert checkpoint_progress(tmp_path / "last.pt") == recorded_progress(tmp_path / "last.pt") == (3, 3, recorded)
    record.write_text(json.dumps({"run_settings": FOLD0, "epoch": 2, "max_epochs": 3}))  # the kill window
    assert checkpoint_progress(tmp_path / "last.pt") == (3, 3, recorded)
    _written_before_settings_were_kept_inside(tmp_path / "last.pt")
    assert checkpoint_progress(tmp_path / "last.pt") == (2, 3, FOLD0)
    (tmp_path / "last.pt").write_bytes(b"damaged")
    assert checkpoint_progress(tmp_path / "last.pt") == (2, 3, FOLD0)
    record.unlink()
    assert checkpoint_progress(tmp_path / "last.pt") is None


def _assert_fold1_refused(folder: Path, epochs: int) -> None:
    """The fold-0 run interrupted after epoch 2 in ``folder`` is refused to a fold-1 run: by the start-up check, by the
    handler and by the evaluation's split check."""
    refused = rf"another run, interrupted after epoch 2 of {epochs} \(fold: '0' -> '1'\)"
    with pytest.raises(ValueError, match=refused):
        check_resume(folder / "last.pt", True, FOLD1, epochs=epochs)
    with pytest.raises(ValueError, match=refused):
        _Run(folder, max_epochs=epochs, settings=FOLD1).run()
    with pytest.raises(ValueError, match=r"another split \(fold: '0' -> '1'"):
        check_evaluation_split(folder / "last.pt", FOLD1)


def _written_before_settings_were_kept_inside(path: Path) -> None:
    saved = torch.load(path, weights_only=True)
    del saved["run_settings"]
    torch.save(saved, path)


def test_a_last_pt_without_settings_inside_reads_last_json(tmp_path: Path, caplog) -> None:
    """A last.pt of an earlier version (settings only in last.json) still resumes and is still checked; an unreadable
    last.json beside it stops the run (the checks would be off otherwise); without last.json it resumes, logged."""
    _Run(tmp_path, max_epochs=5, stop_after=2, settings=FOLD0).run()
    _written_before_settings_were_kept_inside(tmp_path / "last.pt")
    _assert_fold1_refused(tmp_path, epochs=5)
    resumed = _Run(tmp_path, max_epochs=5, stop_after=3, settings=FOLD0)
    resumed.run()
    assert resumed.epochs_run == [3]

    _written_before_settings_were_kept_inside(tmp_path / "last.pt")
    (tmp_path / "last.json").write_text("{")
    message = re.escape(str(tmp_path / "last.json")) + r": cannot be read \(JSONDecodeError.*--resume False"
    with pytest.raises(ValueError, match=message):
        check_resume(tmp_path / "last.pt", True, FOLD0, epochs=5)
    with pytest.raises(ValueError, match=message):
        _Run(tmp_path, max_epochs=5, settings=FOLD0).run()
    with pytest.raises(ValueError, match=message):
        check_evaluation_split(tmp_path / "last.pt", FOLD1)

    (tmp_path / "last.json").unlink()
    check_resume(tmp_path / "last.pt", True, FOLD1, epochs=5)  # nothing recorded: nothing to check
    last = _Run(tmp_path, max_epochs=5, settings=FOLD0)
    last.run()
    assert last.epochs_run == [4, 5]
    assert "records no run settings: resuming it without checking them" in caplog.text


def _damage(path: Path, kind: str) -> None:
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "garbage":
        path.write_bytes(b"not a checkpoint at all\n" * 40)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        path.mkdir()


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "a folder"])
def test_an_unreadable_last_pt_is_named(tmp_path: Path, kind: str) -> None:
    """Not a torch traceback: the file, the reason and what to do; at start (check_resume, before any data is cached)
    and when the trainer starts."""
    _Run(tmp_path, max_epochs=4, stop_after=2, settings=FOLD0).run()
    (tmp_path / "last.json").unlink()
    _damage(tmp_path / "last.pt", kind)
    message = re.escape(str(tmp_path / "last.pt")) + r": not a readable checkpoint \(\w+.*\); remove it or start over"
    with pytest.raises(ValueError, match=message + r" with --resume False"):
        check_resume(tmp_path / "last.pt", True, FOLD0, epochs=4)
    with pytest.raises(ValueError, match=message if kind != "a folder" else r"last\.pt: not a file; remove it"):
        _Run(tmp_path, max_epochs=4, settings=FOLD0).run()
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "last.pt")) + ": not a readable checkpoint"):
        check_evaluation_split(tmp_path / "last.pt", FOLD1)  # the training's split cannot be checked
    if kind == "a folder":
        with pytest.raises(ValueError, match=r"last\.pt: not a file; remove it"):
            _Run(tmp_path, max_epochs=4, resume=False).run()  # it would fail only when the first epoch is saved
        shutil.rmtree(tmp_path / "last.pt")
    fresh = _Run(tmp_path, max_epochs=2, resume=False, settings=FOLD0)
    fresh.run()  # --resume False starts over and replaces it
    assert fresh.epochs_run == [1, 2]


def test_an_unreadable_last_pt_of_another_run_says_so_first(tmp_path: Path) -> None:
    """An unreadable last.pt whose last.json records another run's interrupted training: that is said first (the file
    is not this run's to remove); with this run's settings, the unreadable file is named."""
    _Run(tmp_path, max_epochs=4, stop_after=2, settings=FOLD0).run()
    _damage(tmp_path / "last.pt", "truncated")
    with pytest.raises(ValueError, match=r"holds another run, interrupted after epoch 2 of 4 \(fold: '0' -> '1'\)"):
        check_resume(tmp_path / "last.pt", True, FOLD1, epochs=4)
    with pytest.raises(ValueError, match=r"last\.pt: not a readable checkpoint"):
        check_resume(tmp_path / "last.pt", True, FOLD0, epochs=4)
    with pytest.raises(ValueError, match=r"another split \(fold: '0' -> '1'"):
        check_evaluation_split(tmp_path / "last.pt", FOLD1)  # last.json still records the split
    check_evaluation_split(tmp_path / "last.pt", FOLD0)


def _evaluator() -> monai.engines.SupervisedEvaluator:
    return monai.engines.SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=[{"image": torch.ones(1, 2), "label": torch.ones(1, 1)}],
        epoch_length=1,
        network=torch.nn.Linear(2, 1),
        metric_cmp_fn=lambda current, best: current < best,
    )


def _resume_with(path: Path, evaluator: monai.engines.SupervisedEvaluator, stop_after: int | None = None) -> None:
    trainer = Engine(lambda engine, batch: None)
    ResumeCheckpoint(path, {"model": torch.nn.Linear(2, 1), "validator": evaluator}).attach(trainer)
    if stop_after is not None:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda engine: engine.terminate())
    trainer.run([0], max_epochs=4)


def test_the_validators_best_key_metric_is_resumed(tmp_path: Path) -> None:
    """Without it a resumed run's evaluator started from no best and logged its first validation as the best (while
    model.pt rightly kept the earlier model). A checkpoint written without it still resumes."""
    first = _evaluator()
    first.state.best_metric, first.state.best_metric_epoch = 0.3, 2
    _resume_with(tmp_path / "last.pt", first, stop_after=2)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["validator"] == {
        "best_metric": 0.3,
        "best_metric_epoch": 2,
    }
    resumed = _evaluator()
    assert resumed.state.best_metric_epoch == -1
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    _resume_with(tmp_path / "last.pt", resumed)
    assert (resumed.state.best_metric, resumed.state.best_metric_epoch) == (0.3, 2)
    del saved["validator"]  # a checkpoint of bundle 0.2.3 or earlier
    torch.save(saved, tmp_path / "last.pt")
    older = _evaluator()
    _resume_with(tmp_path / "last.pt", older)
    assert older.state.best_metric_epoch == -1


@pytest.mark.parametrize("key", ["trainer", "scaler", "run_settings", "training_images"])
def test_every_reserved_key_is_refused(tmp_path: Path, key: str) -> None:
    """Against the bug (only trainer and scaler reserved): a save_dict entry "run_settings" or "training_images" would
    be overwritten in last.pt by the handler's own record (and a resumed run would load it into that object)."""
    with pytest.raises(ValueError, match="reserved"):
        ResumeCheckpoint(tmp_path / "last.pt", {"model": torch.nn.Linear(1, 1), key: torch.nn.Linear(1, 1)})


def test_a_run_interrupted_at_the_new_max_epochs_starts_over(tmp_path: Path, caplog) -> None:
    """Against the bug (``done >= max_epochs`` -> ``>``): interrupted after epoch 3 of 4 and started again with 3
    epochs, the boundary: nothing is left to resume, so a new run trains epochs 1 to 3 (the mutant "resumed" and trained
    none)."""
    _Run(tmp_path, max_epochs=4, stop_after=3).run()
    second = _Run(tmp_path, max_epochs=3)
    second.run()
    assert second.epochs_run == [1, 2, 3]
    assert "interrupted after epoch 3 of 4, and max_epochs=3 leaves nothing to resume" in caplog.text


def test_an_interrupted_run_resumed_with_more_epochs_trains_up_to_them(tmp_path: Path) -> None:
    """Against the bug (the checkpoint's max_epochs kept): the module promises that a resumed run trains up to the
    configured max_epochs, not the interrupted run's."""
    _Run(tmp_path, max_epochs=3, stop_after=2).run()
    resumed = _Run(tmp_path, max_epochs=5)
    resumed.run()
    assert resumed.epochs_run == [3, 4, 5] and resumed.trainer.state.epoch == 5


def test_a_data_parallel_network_is_saved_as_the_plain_network(tmp_path: Path) -> None:
    """Against the bug (DataParallel / DDP not unwrapped): last.pt's "model" must load into the plain network (MONAI
    Label's and CheckpointLoader's view), without "module." prefixes."""
    net = torch.nn.Linear(2, 1)
    trainer = Engine(lambda engine, batch: None)
    ResumeCheckpoint(tmp_path / "last.pt", {"model": torch.nn.DataParallel(net)}, lock=False).attach(trainer)
    trainer.run([0], max_epochs=1)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert set(saved) == {"weight", "bias"}
    torch.nn.Linear(2, 1).load_state_dict(saved)


def test_the_amp_scaler_is_saved_and_resumed(tmp_path: Path) -> None:
    """Against the bug (the trainer's scaler never added): an AMP run resumed with a fresh loss scale."""

    def run(stop_after: int | None, scale: float) -> Engine:
        trainer = Engine(lambda engine, batch: None)
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=scale)
        ResumeCheckpoint(tmp_path / "last.pt", {"model": torch.nn.Linear(2, 1)}, lock=False).attach(trainer)
        if stop_after is not None:
            trainer.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda engine: engine.terminate())
        trainer.run([0], max_epochs=4)
        return trainer

    run(stop_after=2, scale=1024.0)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["scaler"]["scale"] == 1024.0
    resumed = run(stop_after=None, scale=8.0)
    assert resumed.state.epoch == 4 and resumed.scaler.get_scale() == 1024.0


def test_run_settings_given_as_numbers_resume_their_own_run(tmp_path: Path) -> None:
    """Against the bug (settings kept as given): they are recorded as text, and a run given {"fold": 0} must resume the
    run it recorded (compared with the text read back, 0 != "0" refused it)."""
    settings = {**FOLD0, "fold": 0, "num_folds": 5}
    _Run(tmp_path, max_epochs=4, stop_after=2, settings=settings).run()
    again = _Run(tmp_path, max_epochs=4, settings=settings)
    again.run()
    assert again.epochs_run == [3, 4]


def test_run_settings_record_absolute_expanded_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the bug (no abspath: a relative --dataset_dir recorded relative to the cwd of the run) and (no
    expanduser: ``~/data`` and the same folder written out would be two data sets)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    settings = run_settings("data/kits19", "~/lists/kits.json", 0, 5, 0, "dice")
    assert settings["dataset_dir"] == str(tmp_path / "data" / "kits19")
    assert settings["datalist"] == str(tmp_path / "home" / "lists" / "kits.json")
    assert (
        run_settings(None, "", 0, 5, 0, "dice")["dataset_dir"]
        == run_settings(None, "", 0, 5, 0, "dice")["datalist"]
        == ""
    )


def test_run_settings_do_not_depend_on_the_order_of_mappings() -> None:
    """Against the bug (options without sort_keys) and (loss_kwargs as str(dict)): the same loss arguments or options
    given in another order (another config overlay, a CLI override) are the same run; the format stays JSON."""
    a = run_settings(
        "/d", None, 0, 5, 0, "dice", {"softmax": True, "to_onehot_y": True}, options={"o": {"a": 1, "b": 2}}
    )
    b = run_settings(
        "/d", None, 0, 5, 0, "dice", {"to_onehot_y": True, "softmax": True}, options={"o": {"b": 2, "a": 1}}
    )
    assert a == b
    assert a["loss_kwargs"] == '{"softmax": true, "to_onehot_y": true}' and a["o"] == '{"a": 1, "b": 2}'


def test_the_loss_description_includes_buffers() -> None:
    """Against the bug (buffers left out): class weights live in buffers (torch's weighted losses, MONAI's DiceLoss), so
    two losses with other class weights were described alike and a resume with other weights was not refused."""
    import monai

    from monai_mixedfocal.bundle.run_settings import describe_loss

    one = monai.losses.DiceCELoss(softmax=True, to_onehot_y=True, weight=torch.tensor([1.0, 1.0, 1.0]))
    other = monai.losses.DiceCELoss(softmax=True, to_onehot_y=True, weight=torch.tensor([1.0, 2.0, 5.0]))
    assert describe_loss(one) != describe_loss(other)


def test_training_images_are_sorted_and_unique() -> None:
    """Against the bug (list in the datalist's order, duplicates kept): the record is documented sorted and unique."""
    items = [{"image": "/data/b.nii.gz"}, {"image": ["/data/a.nii.gz"]}, {"image": "/data/b.nii.gz"}, {"label": "x"}]
    assert training_images(items) == ["/data/a.nii.gz", "/data/b.nii.gz"]


def test_trainer_epochs_reads_an_epoch_keyed_state() -> None:
    """Against the bug (always iteration // epoch_length): Ignite's state dict holds either the iteration or the
    epoch."""
    assert trainer_epochs({"epoch": 3, "max_epochs": 5, "epoch_length": 10}) == (3, 5)
    assert trainer_epochs({"iteration": 35, "max_epochs": 5, "epoch_length": 10}) == (3, 5)


def test_a_last_json_that_is_not_an_object_is_named(tmp_path: Path) -> None:
    """Against the bug (no check of the JSON type): an older last.pt beside a last.json holding a list failed with
    AttributeError instead of the error naming the file."""
    _Run(tmp_path, max_epochs=4, stop_after=2, settings=FOLD0).run()
    _written_before_settings_were_kept_inside(tmp_path / "last.pt")
    (tmp_path / "last.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"last\.json: cannot be read \(ValueError: holds a JSON list, not an object"):
        check_resume(tmp_path / "last.pt", True, FOLD0, epochs=4)


def test_check_resume_lets_a_run_with_fewer_epochs_start_over(tmp_path: Path) -> None:
    """Against the bug (``done >= min(planned, epochs)`` -> ``done >= planned``) and (the same in the unreadable
    branch): another run's interruption after epoch 2 leaves nothing to resume for a run of 2 epochs, which starts over
    (as ResumeCheckpoint does) instead of being refused at start."""
    _Run(tmp_path, max_epochs=4, stop_after=2, settings=FOLD0).run()
    check_resume(tmp_path / "last.pt", True, FOLD1, epochs=2)
    _damage(tmp_path / "last.pt", "truncated")  # last.json records the run: the unreadable file is what is said
    with pytest.raises(ValueError, match=r"last\.pt: not a readable checkpoint"):
        check_resume(tmp_path / "last.pt", True, FOLD1, epochs=2)


def test_another_datalist_of_the_same_folder_is_another_data_set(tmp_path: Path) -> None:
    """Against the bug (only dataset_dir compared): a model trained on the folder's folds, evaluated on an external
    datalist, is evaluated as asked (the docstring's "another data set")."""
    _Run(tmp_path, max_epochs=1, settings=FOLD0).run()
    external = run_settings("/data/kits19", "/data/external_test.json", 1, 5, 0, "dice", {"softmax": True})
    check_evaluation_split(tmp_path / "last.pt", external)


def test_recorded_training_images_decide_over_the_settings(tmp_path: Path) -> None:
    """Against the bug (the settings checked even when the images were): with the training images recorded, an
    evaluation whose cases are none of them passes, even under other split settings."""
    trained = [{"image": str(tmp_path / f"case_{i}.nii.gz")} for i in range(3)]
    _Run(tmp_path / "run", max_epochs=1, settings=FOLD0, training_data=trained).run()
    check_evaluation_split(tmp_path / "run" / "last.pt", FOLD1, [{"image": str(tmp_path / "case_9.nii.gz")}])


def test_evaluation_with_another_fold_seed_is_refused(tmp_path: Path) -> None:
    """Against the bug (fold_seed not a split key): another fold_seed reshuffles the folds, so the evaluation fold holds
    training cases."""
    _Run(tmp_path, max_epochs=1, settings=FOLD0).run()
    other_seed = run_settings("/data/kits19", None, 0, 5, 1, "dice", {"softmax": True})
    with pytest.raises(ValueError, match=r"another split \(fold_seed: '0' -> '1'"):
        check_evaluation_split(tmp_path / "last.pt", other_seed)


def test_no_seed_is_recorded_as_empty() -> None:
    """Against the bug (``str(None)``): the documented record of a run without a seed is ``""``."""
    assert run_settings("/d", None, 0, 5, 0, "dice")["seed"] == ""
    assert run_settings("/d", None, 0, 5, 0, "dice", seed=0)["seed"] == "0"


def test_describe_network_is_one_line_with_the_full_class_name_and_refuses_a_non_module() -> None:
    from monai.networks.nets import BasicUNet

    from monai_mixedfocal.bundle import describe_network

    text = describe_network(BasicUNet(features=(4, 4, 8, 8, 16, 4)))
    assert text.startswith("monai.networks.nets.basic_unet.BasicUNet: BasicUNet( (conv_0): TwoConv(")
    assert "\n" not in text and "  " not in text
    with pytest.raises(TypeError, match=r"describe_network takes a torch\.nn\.Module, got str"):
        describe_network("BasicUNet")


def test_evaluation_with_another_network_than_the_recorded_one_is_refused(tmp_path: Path) -> None:
    """The recorded network (``training_options['network']``) against the evaluation's; a record or an evaluation
    without one (an earlier version, a config without the option) is not checked."""
    trained = run_settings("/data/kits19", None, 2, 5, 0, "dice", options={"network": "A"})
    _Run(tmp_path, max_epochs=1, settings=trained).run()
    same_split = {k: trained[k] for k in trained if k != "network"}
    check_evaluation_split(tmp_path / "last.pt", trained)
    check_evaluation_split(tmp_path / "last.pt", same_split)  # the evaluation records no network
    with pytest.raises(ValueError, match=r"trained with another network \(network: '\"A\"' -> '\"B\"', recorded in "):
        check_evaluation_split(tmp_path / "last.pt", {**trained, "network": '"B"'})
    _Run(tmp_path / "old", max_epochs=1, settings=same_split).run()
    check_evaluation_split(tmp_path / "old" / "last.pt", {**trained, "network": '"B"'})  # no network recorded
