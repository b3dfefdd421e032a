# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""JoiningCacheDataset: MONAI's CacheDataset, whose caching threads have stopped when a failure to load is raised."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
from monai.data import CacheDataset
from monai.transforms import Compose, Lambda

from monai_mixedfocal.bundle import JoiningCacheDataset


def _square(x: int) -> torch.Tensor:
    return torch.full((2, 3), float(x * x))


@pytest.mark.parametrize("num_workers", [None, 0, 1, 3])
@pytest.mark.parametrize("progress", [True, False])
def test_the_same_cache_as_monai(num_workers: int | None, progress: bool) -> None:
    data = list(range(7))
    kwargs = {"transform": Compose([Lambda(_square)]), "cache_rate": 0.6, "num_workers": num_workers}
    ours = JoiningCacheDataset(data, progress=progress, **kwargs)
    monai = CacheDataset(data, progress=progress, **kwargs)
    assert isinstance(ours, CacheDataset) and len(ours) == len(monai) == 7 and ours.cache_num == monai.cache_num == 4
    for index in range(7):
        torch.testing.assert_close(ours[index], monai[index])
    ours.set_data([3, 1])  # set_data fills the cache again
    torch.testing.assert_close(ours[0], _square(3))


def test_a_failure_stops_every_caching_thread_before_it_is_raised() -> None:
    """The case that fails is raised; the cases not started are cancelled; those being loaded have finished."""
    started: list[int] = []
    lock = threading.Lock()
    threads_before = set(threading.enumerate())

    def load(x: int) -> int:
        with lock:
            started.append(x)
        if x == 0:
            time.sleep(0.05)
            raise ValueError("case 0 is damaged")
        time.sleep(0.2)
        return x

    with pytest.raises(RuntimeError) as raised:
        JoiningCacheDataset(list(range(40)), transform=Lambda(load), cache_rate=1.0, num_workers=2, progress=False)
    assert "case 0 is damaged" in repr(raised.value.__cause__) or "case 0 is damaged" in str(raised.value)
    assert not set(threading.enumerate()) - threads_before, "a caching thread outlived the error"
    assert len(started) <= 4, f"{len(started)} of 40 cases were loaded after the failure"


def test_a_failing_cache_exits_with_the_error_not_sigabrt(tmp_path) -> None:
    """The process ends with the error (exit code 1), not ``terminate called without an active exception`` (SIGABRT),
    while another thread would still be in PyTorch's C++ code."""
    script = textwrap.dedent(
        """
        import time, torch
        from monai.transforms import Lambda
        from monai_mixedfocal.bundle import JoiningCacheDataset

        def load(x):
            if x == 0:
                time.sleep(0.2)
                raise ValueError("case 0 is damaged")
            a = torch.randn(400, 400)
            for _ in range(100):
                a = torch.tanh(a @ a)
            return a

        JoiningCacheDataset(list(range(6)), transform=Lambda(load), cache_rate=1.0, num_workers=2, progress=False)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "case 0 is damaged" in proc.stderr and "terminate called" not in proc.stderr


def test_the_cache_is_filled_by_num_workers_threads() -> None:
    """Against the bug (one caching thread whatever num_workers): the cache is filled concurrently, by at most
    num_workers threads."""
    threads: set[str] = set()
    lock = threading.Lock()

    def load(x: int) -> int:
        with lock:
            threads.add(threading.current_thread().name)
        time.sleep(0.05)
        return x

    dataset = JoiningCacheDataset(
        list(range(12)), transform=Lambda(load), cache_rate=1.0, num_workers=3, progress=False
    )
    assert [dataset[i] for i in range(12)] == list(range(12))
    assert 1 < len(threads) <= 3, threads
