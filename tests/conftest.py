# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Shared test configuration."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from monai_mixedfocal.losses import _fused_loss, _fused_runner


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    """In-process tests use tiny tensors, where torch's intra-op thread pool costs far more than the arithmetic (a
    2x3x3x4 log_softmax takes ~0.3 ms with 2 threads and 4 us with 1; tens of ms on a busy machine). Subprocesses
    (bundle runs, the study) keep torch's default."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _fresh_compiled_losses() -> Iterator[None]:
    """Each test starts with no whole-compiled loss (the registry holds its losses alive and caps their number, so that
    losses of earlier tests would decide which path a later one takes) and forgets a failed compilation after."""
    _fused_loss._compiled_losses.clear()
    try:
        yield
    finally:
        _fused_loss._compiled_losses.clear()
        _fused_runner._compile_state["failed"] = None


@pytest.fixture
def lock_holder() -> Iterator:
    """Start another process that holds the training lock of a checkpoint folder, as a running training does."""
    children: list[subprocess.Popen] = []
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "os.write(fd, f'{os.getpid()}\\n'.encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )

    def hold(folder: Path) -> subprocess.Popen:
        folder.mkdir(parents=True, exist_ok=True)
        child = subprocess.Popen([sys.executable, "-c", code, str(folder / ".lock")], stdout=subprocess.PIPE, text=True)
        children.append(child)
        assert child.stdout.readline().strip() == "locked"
        return child

    yield hold
    for child in children:
        child.kill()
        child.wait(30)
