# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""MONAI's ``CacheDataset``, whose caching threads have stopped before a failure to load a case is raised.

``CacheDataset`` fills its cache with a ``multiprocessing.pool.ThreadPool``. When one case fails (a damaged NIfTI
file, say), the error reaches the main thread while the other threads are still loading and resampling their cases,
and leaving the pool does not wait for them. The bundle command then ends with the error, and Python finalizes while
those daemon threads run inside PyTorch's C++ code: they are ended by a forced unwind, which a ``noexcept`` frame turns
into ``std::terminate``. The process prints ``terminate called without an active exception`` after the traceback
and dies of SIGABRT (exit code 134), so that a data error looks like a crash (the study reported it as "killed by
SIGABRT"). :class:`JoiningCacheDataset` fills the cache with a ``concurrent.futures.ThreadPoolExecutor`` instead and,
when a case fails (or on Ctrl-C), cancels the cases not started and waits for those being loaded, so that the command
exits with the error (exit code 1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from monai.data import CacheDataset
from monai.utils import optional_import

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["JoiningCacheDataset"]


class JoiningCacheDataset(CacheDataset):
    """``monai.data.CacheDataset`` that, when loading a case fails, stops its caching threads before raising.

    Same arguments and behaviour as ``CacheDataset`` (the cache holds the same items, in the same order, filled by
    ``num_workers`` threads, with the same progress bar). Only the failure differs: the cases not yet started are
    cancelled and those being loaded are waited for (at most ``num_workers`` of them), then the error is raised. With
    MONAI's thread pool, the process died of SIGABRT after the error (see the module's docstring).

    Example:
        In a bundle config: ``{"_target_": "monai_mixedfocal.bundle.JoiningCacheDataset", "data": ..., ...}``.
    """

    def _fill_cache(self, indices: Sequence[int] | None = None) -> list[Any]:
        """Compute the cache content of ``indices`` (the first ``cache_num`` items when ``None``), in order.

        Raises:
            Exception: what loading a case raised (after every caching thread has stopped).
        """
        if self.cache_num <= 0:
            return []
        if indices is None:
            indices = list(range(self.cache_num))
        workers = self.num_workers if self.num_workers is not None else os.cpu_count()  # as ThreadPool(None)
        executor = ThreadPoolExecutor(max_workers=workers or 1, thread_name_prefix="cache")
        try:
            items = executor.map(self._load_cache_item, indices)
            if self.progress and has_tqdm:
                items = tqdm(items, total=len(indices), desc="Loading dataset")
            return list(items)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
