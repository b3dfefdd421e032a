# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Shared test configuration."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


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
