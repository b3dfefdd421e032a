# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Benchmarks of monai-mixedfocal (run from the repository root: ``python -m benchmarks.losses``)."""

from __future__ import annotations
