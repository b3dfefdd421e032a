# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""models/model.pt written atomically (a kill while it saves keeps the previous best model), checkpoint files read with
errors that name them, and the start-up checks of a run's output folders: writable, and no other training in them."""

from __future__ import annotations

import errno
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from bundle_utils import BUNDLES, bundle_workflow, make_data, overrides, write_model_file
from error_chain import error_chain
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from monai_mixedfocal.bundle import (
    AtomicCheckpointSaver,
    ResumeCheckpoint,
    check_model_file,
    check_writable,
    load_checkpoint,
    lock_training,
)
from monai_mixedfocal.bundle.output_dirs import LOCK_NAME, release_training_lock

# the validation loss after each epoch: every epoch is better than the one before
VAL_LOSSES = [0.5, 0.4, 0.3, 0.2]


class _Saving:
    """A validator whose network's bias records the epoch, and a best-model saver of ``saver_class`` attached to it."""

    def __init__(self, ckpt_dir: Path, saver_class: type[CheckpointSaver] = AtomicCheckpointSaver, **kwargs) -> None:
        self.model = torch.nn.Linear(2, 1)
        self.validator = Engine(lambda engine, batch: None)
        self.epoch = 0

        @self.validator.on(Events.EPOCH_COMPLETED)
        def set_loss(engine: Engine) -> None:
            engine.state.metrics["val_loss"] = VAL_LOSSES[self.epoch - 1]

        options = {"save_key_metric": True, "key_metric_name": "val_loss", "key_metric_negative_sign": True}
        options.update({"key_metric_filename": "model.pt", **kwargs})
        self.saver = saver_class(save_dir=str(ckpt_dir), save_dict={"model": self.model}, **options)
        self.saver.attach(self.validator)

    def validate(self) -> None:
        self.epoch += 1
        with torch.no_grad():
            self.model.bias.fill_(self.epoch)
        self.validator.run([0])


def _bias(path: Path) -> float:
    return torch.load(path, weights_only=True)["bias"].item()


@pytest.mark.parametrize(("saver_class", "kept"), [(CheckpointSaver, False), (AtomicCheckpointSaver, True)])
def test_a_kill_while_model_pt_is_written_keeps_the_previous_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saver_class: type[CheckpointSaver], kept: bool
) -> None:
    """The audit's case: half of the new model written when the process dies. MONAI's saver has removed the previous
    model.pt and writes in place (the pitfall); the atomic saver only ever replaces a complete file."""
    run = _Saving(tmp_path, saver_class)
    run.validate()
    save = torch.save

    def killed_halfway(obj, f, *args, **kwargs) -> None:
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        if isinstance(f, (str, os.PathLike)):
            Path(f).write_bytes(half)
        else:
            f.write(half)
        raise KeyboardInterrupt  # the kill

    monkeypatch.setattr(torch, "save", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        run.validate()
    monkeypatch.undo()
    if kept:
        assert _bias(tmp_path / "model.pt") == 1.0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    else:
        with pytest.raises(RuntimeError, match="failed finding central directory"):
            _bias(tmp_path / "model.pt")


def test_sigkill_while_model_pt_is_written_keeps_the_previous_best(tmp_path: Path) -> None:
    """A real SIGKILL while the new model.pt is being written (held at its fsync)."""
    script = textwrap.dedent(
        f"""
        import os, sys, time
        import torch
        from ignite.engine import Engine, Events
        from monai_mixedfocal.bundle import AtomicCheckpointSaver

        model = torch.nn.Linear(2, 1)
        validator = Engine(lambda engine, batch: None)
        losses = iter([0.5, 0.4])
        validator.add_event_handler(
            Events.EPOCH_COMPLETED, lambda engine: engine.state.metrics.update(val_loss=next(losses))
        )
        AtomicCheckpointSaver(
            {str(tmp_path)!r}, {{"model": model}}, save_key_metric=True, key_metric_name="val_loss",
            key_metric_negative_sign=True, key_metric_filename="model.pt",
        ).attach(validator)
        torch.nn.init.constant_(model.bias, 1.0)
        validator.run([0])

        def held(fd):
            print("WRITING", flush=True)
            time.sleep(120)

        os.fsync = held
        torch.nn.init.constant_(model.bias, 2.0)
        validator.run([0])
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "WRITING"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert _bias(tmp_path / "model.pt") == 1.0
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left[-1] == "model.pt" and all(re.fullmatch(r"\.model\.pt\..*\.tmp", name) for name in left[:-1])


def test_model_pt_gets_the_umask_permissions(tmp_path: Path) -> None:
    """MONAI writes in place for this (its atomic mode gives the file mode 0600)."""
    run = _Saving(tmp_path)
    run.validate()
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "model.pt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_the_fixed_name_is_replaced_never_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    removed: list[str] = []
    unlink = Path.unlink

    def spy(self: Path, missing_ok: bool = False) -> None:
        removed.append(self.name)
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", spy)
    run = _Saving(tmp_path)
    for epoch in (1, 2, 3):
        run.validate()
        assert _bias(tmp_path / "model.pt") == epoch
    assert "model.pt" not in removed


@pytest.mark.parametrize(("saver_class", "fails"), [(CheckpointSaver, True), (AtomicCheckpointSaver, False)])
def test_a_file_to_remove_may_be_missing(tmp_path: Path, saver_class: type[CheckpointSaver], fails: bool) -> None:
    """Ignite's names (no fixed file name): the outdated best model is removed with missing_ok."""
    run = _Saving(tmp_path, saver_class, key_metric_filename=None)
    run.validate()
    (saved,) = tmp_path.glob("model_key_metric=*.pt")
    saved.unlink()
    if fails:
        with pytest.raises(FileNotFoundError):
            run.validate()
        return
    run.validate()
    (saved,) = tmp_path.glob("model_key_metric=*.pt")
    assert _bias(saved) == 2.0


@pytest.mark.parametrize("kind", ["truncated", "garbage", "text", "empty", "a folder", "missing"])
def test_unreadable_checkpoints_are_named(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(200, 200)}, path)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif kind == "garbage":
        path.write_bytes(b"\x80\x02garbage" * 50)
    elif kind == "text":
        path.write_bytes(b"an interrupted run")  # unpickled in torch's legacy format: IndexError
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        if kind == "a folder":
            path.mkdir()
    message = re.escape(f"{path}: not a readable checkpoint (") + r"\w+"
    with pytest.raises(ValueError, match=message + r".*\); remove it or start over with --resume False$"):
        load_checkpoint(path)
    if kind == "missing":
        with pytest.raises(FileNotFoundError, match=re.escape(f"{path}: no such model file. A training writes it")):
            check_model_file(path)
    else:
        with pytest.raises(ValueError, match=message + r".*\); train this bundle_root again"):
            check_model_file(path)


def test_a_readable_model_passes(tmp_path: Path) -> None:
    torch.save(torch.nn.Linear(2, 1).state_dict(), tmp_path / "model.pt")
    check_model_file(tmp_path / "model.pt")
    torch.save(torch.zeros(2), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match=r"holds a Tensor, not a state dict"):
        check_model_file(tmp_path / "tensor.pt")


def test_check_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_writable([tmp_path / "a" / "b", str(tmp_path / "c")])
    assert (tmp_path / "a" / "b").is_dir() and (tmp_path / "c").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the test file is removed
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=re.escape(f"cannot write to {tmp_path / 'file' / 'models'} (Not a directory)")):
        check_writable(tmp_path / "file" / "models")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OSError, match=r"^cannot write to .*/c \(Read-only file system\)$"):
        check_writable([tmp_path / "c"])


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
def test_a_second_training_in_the_folder_is_refused(tmp_path: Path, lock_holder, monkeypatch) -> None:
    other = lock_holder(tmp_path / "run" / "checkpoints")
    message = re.escape(f"another training (pid {other.pid}) is running in {tmp_path / 'run'}")
    with pytest.raises(RuntimeError, match=message):
        lock_training(tmp_path / "run" / "checkpoints" / "last.pt")
    handler = ResumeCheckpoint(tmp_path / "run" / "checkpoints" / "last.pt", {"model": torch.nn.Linear(1, 1)})
    with pytest.raises(RuntimeError, match=message):
        handler.attach(Engine(lambda engine, batch: None))
    monkeypatch.setenv("RANK", "1")
    assert lock_training(tmp_path / "run" / "checkpoints" / "last.pt") is None  # only rank 0 locks
    monkeypatch.delenv("RANK")
    other.kill()
    other.wait(30)  # the OS releases the lock of a process that died
    lock = lock_training(tmp_path / "run" / "checkpoints" / "last.pt")
    assert lock == tmp_path / "run" / "checkpoints" / ".lock" and lock.read_text() == f"{os.getpid()}\n"
    assert lock_training(tmp_path / "run" / "checkpoints" / "last.pt") == lock  # held: taking it again does nothing
    release_training_lock(tmp_path / "run" / "checkpoints" / "last.pt")


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
def test_the_lock_of_a_killed_training_is_free_while_its_forked_workers_live(tmp_path: Path) -> None:
    """A training killed while its DataLoader workers (forked children) still run: the lock is free at once."""
    code = (
        "import os, sys, time\n"
        "from monai_mixedfocal.bundle.output_dirs import lock_training\n"
        "lock_training(sys.argv[1])\n"
        "if os.fork() == 0:\n"  # a worker, forked after the lock was taken, that outlives its parent
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    training = subprocess.Popen(
        [sys.executable, "-c", code, str(checkpoint)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert training.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match="another training"):
            lock_training(checkpoint)
        training.kill()
        training.wait(30)
        assert lock_training(checkpoint) == checkpoint.parent / LOCK_NAME  # the worker lives on, the lock is free
    finally:
        release_training_lock(checkpoint)
        os.killpg(training.pid, signal.SIGKILL)  # the worker
        training.wait(30)


# --- the bundles' configs -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(BUNDLES))
def dataset(request, tmp_path_factory) -> tuple[str, Path]:
    """(dataset name, generated data set root)."""
    name = request.param
    return name, make_data(name, tmp_path_factory.mktemp(name), cases=6)


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_the_bundles_save_model_pt_atomically(name: str, tmp_path: Path) -> None:
    workflow = bundle_workflow(name, ["train.json"], bundle_root=str(tmp_path))
    saver = workflow.parser.get_parsed_content("validate#handlers#0")
    assert type(saver) is AtomicCheckpointSaver
    assert saver._key_metric_checkpoint.save_handler.filename == "model.pt"


def test_unwritable_output_folders_stop_the_run_at_start(dataset: tuple[str, Path], tmp_path: Path) -> None:
    """checkpoints/ cannot be created: training stops in initialize (before caching, not after its first epoch); an
    evaluation, which writes only eval/, goes on."""
    name, root = dataset
    values = overrides(name, dataset_dir=str(root), bundle_root=str(tmp_path))
    (tmp_path / "checkpoints").write_text("a file where the folder goes")
    with pytest.raises(Exception) as info:  # MONAI wraps the error; its cause chain is checked
        bundle_workflow(name, ["train.json"], **values).initialize()
    assert f"cannot write to {tmp_path / 'checkpoints'} (File exists)" in error_chain(info.value)
    (tmp_path / "checkpoints").unlink()
    (tmp_path / "eval").write_text("a file where the folder goes")
    with pytest.raises(Exception) as info:
        bundle_workflow(name, ["train.json", "evaluate.json"], **values).initialize()
    assert f"cannot write to {tmp_path / 'eval'} (File exists)" in error_chain(info.value)
    (tmp_path / "eval").unlink()
    write_model_file(tmp_path)  # in models/, created by the training's check, before it reached checkpoints/
    (tmp_path / "checkpoints").write_text("a file where the folder goes")
    bundle_workflow(name, ["train.json", "evaluate.json"], **values).initialize()


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
def test_a_second_training_in_a_bundle_root_stops_at_start(
    dataset: tuple[str, Path], tmp_path: Path, lock_holder
) -> None:
    name, root = dataset
    values = overrides(name, dataset_dir=str(root), bundle_root=str(tmp_path))
    other = lock_holder(tmp_path / "checkpoints")
    with pytest.raises(Exception) as info:
        bundle_workflow(name, ["train.json"], **values).initialize()
    assert f"another training (pid {other.pid}) is running in {tmp_path}" in error_chain(info.value)
    write_model_file(tmp_path)
    bundle_workflow(name, ["train.json", "evaluate.json"], **values).initialize()  # evaluating it is allowed


def test_the_evaluation_checks_model_pt_at_start(dataset: tuple[str, Path], tmp_path: Path) -> None:
    name, root = dataset
    values = overrides(name, dataset_dir=str(root), bundle_root=str(tmp_path))
    with pytest.raises(Exception) as info:
        bundle_workflow(name, ["train.json", "evaluate.json"], **values).initialize()
    assert f"{tmp_path / 'models' / 'model.pt'}: no such model file. A training writes it" in error_chain(info.value)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(Exception) as info:
        bundle_workflow(name, ["train.json", "evaluate.json"], **values).initialize()
    assert f"{tmp_path / 'models' / 'model.pt'}: not a readable checkpoint (" in error_chain(info.value)


_TRY_LOCK = (
    "import fcntl, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR)\n"
    "try:\n"
    "    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "except OSError:\n"
    "    print('held')\n"
    "else:\n"
    "    print('free')\n"
)


def _lock_state(lock: Path) -> str:
    return subprocess.run([sys.executable, "-c", _TRY_LOCK, str(lock)], capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
def test_the_refusal_names_the_bundle_root_not_the_checkpoint_folder(tmp_path: Path, lock_holder) -> None:
    """Against the bug (the checkpoint folder named as the bundle_root): the existing regex was a prefix of the wrong
    path."""
    folder = tmp_path / "run" / "checkpoints"
    holder = lock_holder(folder)
    with pytest.raises(RuntimeError) as info:
        lock_training(folder / "last.pt")
    assert f"another training (pid {holder.pid}) is running in {tmp_path / 'run'} (it holds " in str(info.value)


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
def test_the_lock_file_holds_only_this_pid(tmp_path: Path) -> None:
    """Against the bug (no truncation): a longer pid or text left by an earlier training would trail this one's."""
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    checkpoint.parent.mkdir(parents=True)
    (checkpoint.parent / ".lock").write_text("123456789012345\nstale\n")
    try:
        lock = lock_training(checkpoint)
        assert lock.read_text() == f"{os.getpid()}\n"
    finally:
        release_training_lock(checkpoint)


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
def test_a_released_lock_can_be_taken_again(tmp_path: Path) -> None:
    """Against the bug (release closes the descriptor but keeps it in the table): taking the lock again then "succeeded"
    without holding anything, and another training would not be refused."""
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    lock = lock_training(checkpoint)
    try:
        assert _lock_state(lock) == "held"
        release_training_lock(checkpoint)
        assert _lock_state(lock) == "free"
        assert lock_training(checkpoint) == lock
        assert _lock_state(lock) == "held"
    finally:
        release_training_lock(checkpoint)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="Linux /proc")
@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
def test_taking_the_held_lock_again_opens_nothing(tmp_path: Path) -> None:
    """Against the bug (no early return for a held lock): every call opened and leaked another descriptor of the lock
    file (the training configs take it twice: in initialize and in ResumeCheckpoint.attach)."""
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    lock = lock_training(checkpoint)
    try:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(3):
            assert lock_training(checkpoint) == lock
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        release_training_lock(checkpoint)


def test_check_writable_expands_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the bug (no expanduser): ``--bundle_root ~/runs`` would create a folder literally named ``~``."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    check_writable("~/runs/eval")
    assert (tmp_path / "home" / "runs" / "eval").is_dir() and not (tmp_path / "~").exists()


def test_a_damaged_model_is_named_by_what_reading_it_whole_says(tmp_path: Path) -> None:
    """Against the bug (no fallback from the mapped read): check_model_file maps the file, and a damaged legacy-format
    file then fails with torch's misleading "mmap can only be used with files saved with ..."; the error must give the
    reason of reading it whole, as load_checkpoint does."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"an interrupted run")
    with pytest.raises(ValueError) as whole:
        load_checkpoint(path)
    with pytest.raises(ValueError) as mapped:
        check_model_file(path)
    assert "mmap" not in str(mapped.value) and "IndexError" in str(mapped.value)
    assert str(whole.value).split(";")[0] == str(mapped.value).split(";")[0]


def test_the_reason_is_the_first_line_of_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the bug (last line instead of first): torch's errors put the cause first and advice after it."""

    def fail(*args, **kwargs):
        raise RuntimeError("failed finding central directory\nThis is an internal error, please report it")

    monkeypatch.setattr(torch, "load", fail)
    with pytest.raises(
        ValueError, match=r"not a readable checkpoint \(RuntimeError: failed finding central directory\)"
    ):
        load_checkpoint(tmp_path / "model.pt")
