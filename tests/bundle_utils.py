# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Shared by the bundle tests: the bundle folders, generated data sets and running ``python -m monai.bundle``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from monai.bundle import ConfigWorkflow

from monai_mixedfocal.data import synthesize_brats20, synthesize_kits19

REPO = Path(__file__).resolve().parents[1]
KITS = REPO / "bundles" / "kits19_mixedfocal_segmentation"
BRATS = REPO / "bundles" / "brats20_mixedfocal_segmentation"
BUNDLES = {"kits19": KITS, "brats20": BRATS}
SCHEMA = REPO / "bundles" / "schema" / "meta_schema.json"

# CPU-sized runs: small patches and network, no worker processes, no caching, 3 folds of the generated cases
TINY_NETWORK = [8, 8, 16, 32, 64, 8]
TINY = {
    "kits19": {"patch_size": [32, 32, 16], "num_folds": 3, "num_workers": 0, "cache_rate": 0, "sw_batch_size": 2},
    "brats20": {"patch_size": [32, 32, 32], "num_folds": 3, "num_workers": 0, "cache_rate": 0, "sw_batch_size": 2},
}


def make_data(dataset: str, root: Path, cases: int = 6, seed: int = 0) -> Path:
    """Generate a small data set in the real layout under ``root`` and return ``root``."""
    if dataset == "kits19":
        synthesize_kits19(root, cases=cases, seed=seed, shape=(24, 64, 64))
    else:
        synthesize_brats20(root, cases=cases, seed=seed, shape=(48, 48, 40))
    return root


def write_model_file(bundle_root: Path) -> None:
    """A readable ``models/model.pt`` (a small state dict), which the start-up of an evaluation or an inference requires
    (only the evaluator's run loads it into the network)."""
    (bundle_root / "models").mkdir(parents=True, exist_ok=True)
    torch.save(torch.nn.Linear(2, 1).state_dict(), bundle_root / "models" / "model.pt")


def bundle_workflow(name: str, files: list[str], workflow_type: str = "train", **override: object) -> ConfigWorkflow:
    """A ``ConfigWorkflow`` of bundle ``name`` from its config ``files`` (in order) and metadata, without logging."""
    configs = BUNDLES[name] / "configs"
    return ConfigWorkflow(
        config_file=[str(configs / f) for f in files],
        meta_file=str(configs / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        **override,
    )


def overrides(dataset: str, **extra: object) -> dict[str, object]:
    """The tiny overrides of ``dataset`` plus ``extra`` (config ids, ``#`` separated)."""
    return {**TINY[dataset], "network_def#features": TINY_NETWORK, **extra}


def cli_args(values: dict[str, object]) -> list[str]:
    """``--id value`` pairs as ``python -m monai.bundle`` (fire) parses them."""
    args: list[str] = []
    for key, value in values.items():
        args += [f"--{key}", repr(value) if isinstance(value, (list, dict)) else str(value)]
    return args


def run_bundle(
    bundle: Path, args: list[str], timeout: float = 600, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle <args>`` in the bundle folder (as its README does) with one CPU thread and the
    extra environment variables ``env``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=bundle,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        output = f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        raise AssertionError(f"monai.bundle {' '.join(args)} failed ({proc.returncode}):\n{output}")
    return proc
