# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Tests of the adaptive class weights: effective number (Cui et al. 2019) from a datalist of NIfTI label maps with its
cache, running label frequencies, the alpha-setting wrapper, the Ignite logger and the bundle-config usage."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser

from monai_mixedfocal.data.errors import DataError
from monai_mixedfocal.losses import (
    CategoricalFocalLoss,
    ClassWeightedLoss,
    ClassWeightsLogger,
    EffectiveNumberWeights,
    RunningClassWeights,
    SigmoidFocalLoss,
    UnifiedFocalLoss,
    get_loss,
)
from monai_mixedfocal.losses.class_weights import CACHE_SUFFIX, effective_number_weights


def reference_effective_number(counts, beta):
    """Cui et al. 2019: w_c = (1 - beta) / (1 - beta^n_c), normalised to sum C (plain float64 formula)."""
    w = np.array([(1.0 - beta) / (1.0 - beta**n) for n in counts], dtype=np.float64)
    return w * len(w) / w.sum()


@pytest.mark.parametrize("beta", [0.9, 0.99, 0.999, 0.9999])
def test_effective_number_matches_the_formula(beta):
    counts = [50000, 1200, 37, 1]
    assert np.allclose(effective_number_weights(counts, beta), reference_effective_number(counts, beta), rtol=1e-12)


def test_effective_number_limits_and_errors():
    counts = [1e9, 1e6, 1e3]
    assert np.allclose(effective_number_weights(counts, 0.0), 1.0)
    # beta -> 1: inverse frequency; the stable form keeps this exact even for 1e9 voxels
    inverse = 1.0 / np.asarray(counts)
    inverse *= 3 / inverse.sum()
    assert np.allclose(effective_number_weights(counts, 1 - 1e-13), inverse, rtol=1e-3)
    # voxel counts saturate with beta = 0.9999: every class above ~1e5 voxels weighs about the same
    saturated = effective_number_weights([1e9, 1e6], 0.9999)
    assert saturated[1] / saturated[0] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] have no labelled voxel"):
        effective_number_weights([10, 0, 3])
    with pytest.raises(ValueError, match="beta"):
        effective_number_weights([10, 3], beta=1.0)


def _write_dataset(root, labels_per_case):
    """Tiny NIfTI label maps and a datalist JSON in the package's format (one fold per case)."""
    cases = []
    for index, array in enumerate(labels_per_case):
        path = root / f"case_{index}_seg.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.uint8), np.eye(4)), str(path))
        cases.append({"case": f"case_{index}", "image": path.name, "label": path.name, "fold": index})
    datalist = root / "datalist.json"
    datalist.write_text(json.dumps({"num_folds": len(cases), "dataset_root": ".", "training": cases}))
    return datalist


def test_from_datalist_counts_caches_and_recounts(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.choice(3, size=(6, 5, 4), p=[0.9, 0.08, 0.02]) for _ in range(3)]
    arrays[0][0, 0, 0] = 2  # every class present in the training folds
    datalist = _write_dataset(tmp_path, arrays)
    weights = EffectiveNumberWeights.from_datalist(datalist, num_classes=3, beta=0.99, fold=2)
    counts = np.bincount(np.concatenate([arrays[0].ravel(), arrays[1].ravel()]), minlength=3)
    assert weights.counts.tolist() == counts.tolist()
    assert np.allclose(weights.weights().numpy(), reference_effective_number(counts, 0.99), rtol=1e-12)
    cache = tmp_path / f"datalist.json{CACHE_SUFFIX}"
    assert cache.is_file()
    # the cache is read back: an edited cache entry is what the next call returns
    content = json.loads(cache.read_text())
    (entry,) = content["entries"].values()
    entry["counts"] = [100.0, 10.0, 1.0]
    cache.write_text(json.dumps(content))
    assert EffectiveNumberWeights.from_datalist(datalist, 3, beta=0.99, fold=2).counts.tolist() == [100, 10, 1]
    # a changed label file invalidates it
    label = tmp_path / "case_0_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.full((6, 5, 4), 2, dtype=np.uint8), np.eye(4)), str(label))
    os.utime(label, ns=(0, 123456789))
    recounted = EffectiveNumberWeights.from_datalist(datalist, 3, beta=0.99, fold=2)
    assert (
        recounted.counts.tolist()
        == np.bincount(np.concatenate([np.full(120, 2), arrays[1].ravel()]), minlength=3).tolist()
    )
    # every case when no fold is given; a list of label files works without a cache
    all_counts = np.bincount(np.concatenate([np.full(120, 2), arrays[1].ravel(), arrays[2].ravel()]), minlength=3)
    assert EffectiveNumberWeights.from_datalist(datalist, 3).counts.tolist() == all_counts.tolist()
    files = [str(tmp_path / f"case_{i}_seg.nii.gz") for i in range(3)]
    assert EffectiveNumberWeights.from_datalist(files, 3, cache=False).counts.tolist() == all_counts.tolist()


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda entry: entry.pop("counts"), id="no-counts"),
        pytest.param(lambda entry: entry.update(counts=[1.0, 2.0]), id="wrong-length"),
        pytest.param(lambda entry: entry.update(counts=["a", "b", "c"]), id="not-numbers"),
        pytest.param(lambda entry: entry.update(counts=[1.0, -2.0, 3.0]), id="negative"),
        pytest.param(lambda entry: entry.update(counts=None), id="null"),
        pytest.param(lambda entry: entry.clear() or entry.update(dummy=1), id="other-keys"),
        pytest.param("not-a-mapping", id="entry-not-a-mapping"),
        pytest.param("entries-a-list", id="entries-a-list"),
    ],
)
def test_a_malformed_cache_entry_is_counted_again_and_rewritten(tmp_path: Path, corrupt: Any) -> None:
    """Like an unreadable cache file: the voxels are counted again and the entry replaced, no bare ``KeyError``."""
    arrays = [np.array([[[0, 1], [2, 0]]]), np.array([[[0, 0], [1, 2]]])]
    datalist = _write_dataset(tmp_path, arrays)
    expected = EffectiveNumberWeights.from_datalist(datalist, num_classes=3).counts.tolist()
    cache = tmp_path / f"datalist.json{CACHE_SUFFIX}"
    content = json.loads(cache.read_text())
    (key,) = content["entries"]
    if corrupt == "not-a-mapping":
        content["entries"][key] = [1.0, 2.0, 3.0]
    elif corrupt == "entries-a-list":
        content["entries"] = [key]
    else:
        corrupt(content["entries"][key])
    cache.write_text(json.dumps(content))
    assert EffectiveNumberWeights.from_datalist(datalist, num_classes=3).counts.tolist() == expected
    assert json.loads(cache.read_text())["entries"][key]["counts"] == expected


def test_from_datalist_errors(tmp_path):
    datalist = _write_dataset(tmp_path, [np.zeros((3, 3, 3)), np.full((3, 3, 3), 4)])
    with pytest.raises(DataError, match=r"case_1_seg.nii.gz: label values must lie in \[0, 2\]"):
        EffectiveNumberWeights.from_datalist(datalist, num_classes=3)
    with pytest.raises(ValueError, match="no labelled voxel"):
        EffectiveNumberWeights.from_datalist(datalist, num_classes=3, fold=1)
    with pytest.raises(DataError, match="not found"):
        EffectiveNumberWeights.from_datalist(tmp_path / "missing.json", num_classes=3)
    (tmp_path / "broken_seg.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DataError, match=r"broken_seg\.nii\.gz"):
        EffectiveNumberWeights.from_datalist([tmp_path / "broken_seg.nii.gz"], num_classes=2, cache=False)
    with pytest.raises(ValueError, match="num_classes"):
        EffectiveNumberWeights.from_datalist(datalist, num_classes=0)


def test_running_weights_follow_the_ema_of_batch_frequencies():
    running = RunningClassWeights(momentum=0.8, power=0.5, eps=1e-6)
    assert running.weights() is None
    batches = [torch.randint(0, 3, (2, 1, 4, 4), generator=torch.Generator().manual_seed(s)) for s in range(4)]
    ema = None
    for batch in batches:
        running.update(batch, num_classes=3)
        freq = np.bincount(batch.numpy().ravel(), minlength=3) / batch.numel()
        ema = freq if ema is None else 0.8 * ema + 0.2 * freq
    expected = (ema + 1e-6) ** -0.5
    assert np.allclose(running.weights().numpy(), expected * 3 / expected.sum(), rtol=1e-12)
    # one-hot targets count the same; the state round-trips
    onehot = torch.nn.functional.one_hot(batches[0][:, 0], 3).movedim(-1, 1)
    other = RunningClassWeights(momentum=0.8, power=0.5)
    other.update(onehot, num_classes=3)
    first = RunningClassWeights(momentum=0.8, power=0.5)
    first.update(batches[0], num_classes=3)
    assert torch.allclose(other.weights(), first.weights())
    restored = RunningClassWeights()
    restored.load_state_dict(running.state_dict())
    assert torch.equal(restored.weights(), running.weights())
    with pytest.raises(ValueError, match="momentum"):
        RunningClassWeights(momentum=1.0)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        RunningClassWeights().update(torch.full((1, 1, 2, 2), 5), num_classes=3)


def test_a_class_not_seen_yet_weighs_as_the_rarest_class_seen():
    """With eps alone a class absent from the first patches (a tumour) weighed 1e6 times the others: weights
    [4.3e-06, 1.0e-05, 3.0], and the classes present got about 1e-7 of the gradient."""
    label = torch.zeros(2, 1, 10, 10, dtype=torch.long)
    label[:, :, :3] = 1  # frequencies 0.7, 0.3, 0
    running = RunningClassWeights()
    running.update(label, num_classes=3)
    raw = np.array([1 / (0.7 + 1e-6), 1 / (0.3 + 1e-6), 1 / (0.3 + 1e-6)])
    np.testing.assert_allclose(running.weights().numpy(), raw * 3 / raw.sum(), rtol=1e-12)
    logits = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)
    SigmoidFocalLoss(to_onehot_y=True, class_weights="running")(logits, label).backward()
    per_class = logits.grad.movedim(1, 0).flatten(1).norm(dim=1)
    assert per_class.min() > 0.1 * per_class.max()
    steep = RunningClassWeights(power=1000.0)  # (f + eps) ** -1000 overflowed float64: NaN weights
    steep.update(label, num_classes=3)
    assert torch.isfinite(steep.weights()).all() and steep.weights().sum() == pytest.approx(3.0)
    for bad in ({"eps": float("inf")}, {"power": float("inf")}, {"power": float("nan")}):
        with pytest.raises(ValueError, match="must be a finite number"):
            RunningClassWeights(**bad)


def test_losses_update_running_weights_only_in_training_steps():
    loss = SigmoidFocalLoss(class_weights="running", class_weight_options={"momentum": 0.5}, to_onehot_y=True)
    x, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 1, 4, 4))
    loss(x, labels)
    weights = loss.class_weights.weights().clone()
    with torch.no_grad():
        loss(x, torch.zeros_like(labels))  # validation under no_grad: unchanged
    loss.eval()
    loss(x, torch.zeros_like(labels))  # eval mode: unchanged
    assert torch.equal(loss.class_weights.weights(), weights)
    # the weights used equal fixed weights of the same values
    fixed = SigmoidFocalLoss(class_weights=weights.tolist(), to_onehot_y=True)
    assert float(loss(x, labels)) == pytest.approx(float(fixed(x, labels)), rel=1e-6)


def test_unified_class_weights_scale_each_class_of_the_focal_part():
    """The weights multiply the focal part's per-class terms (linear in them) and leave the focal Tversky part."""
    x, labels = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randint(0, 3, (2, 1, 4, 4))

    def parts(weights):
        return UnifiedFocalLoss(softmax=True, to_onehot_y=True, class_weights=weights).parts(x, labels)

    plain = parts(None)
    one_class = [float(parts([float(c == k) for c in range(3)])["focal"]) for k in range(3)]
    assert sum(one_class) == pytest.approx(float(plain["focal"]), rel=1e-12)
    weighted = parts([0.5, 1.0, 2.0])
    assert float(weighted["focal"]) == pytest.approx(0.5 * one_class[0] + one_class[1] + 2 * one_class[2], rel=1e-12)
    assert float(weighted["focal"]) != pytest.approx(float(plain["focal"]))
    assert float(parts([2.0, 2.0, 2.0])["focal"]) == pytest.approx(2 * float(plain["focal"]), rel=1e-12)
    assert torch.equal(weighted["focal_tversky"], plain["focal_tversky"])


@pytest.mark.parametrize(
    "make",
    [
        lambda: SigmoidFocalLoss(class_weights="running", to_onehot_y=True),
        lambda: UnifiedFocalLoss(softmax=True, to_onehot_y=True, class_weights="running"),
        lambda: ClassWeightedLoss(get_loss("mixed_focal", softmax=True, to_onehot_y=True), "running"),
    ],
    ids=["sigmoid_focal", "unified", "class_weighted"],
)
def test_running_weights_are_in_the_loss_state_dict(make):
    """A loss saved and loaded with its state_dict (as MONAI's CheckpointSaver / CheckpointLoader do) keeps them."""
    x, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 1, 4, 4))
    trained = make()
    trained(x, labels)
    trained(x, torch.zeros_like(labels))
    restored = make()
    restored.load_state_dict(trained.state_dict())
    assert torch.equal(restored.class_weights.weights(), trained.class_weights.weights())
    trained.eval(), restored.eval()
    assert float(restored(x, labels)) == float(trained(x, labels))
    assert make().state_dict()["_extra_state"] == {"class_weights": RunningClassWeights().state_dict()}


@pytest.mark.parametrize("include_background", [True, False])
def test_class_weighted_loss_sets_alpha(include_background):
    x, labels = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randint(0, 3, (2, 1, 4, 4))
    weights = [0.5, 1.0, 1.5]
    common = {"softmax": True, "to_onehot_y": True, "include_background": include_background}
    wrapped = ClassWeightedLoss(get_loss("focal", **common), weights)
    kept = weights if include_background else weights[1:]
    direct = CategoricalFocalLoss(alpha=[0.25 * w for w in kept], gamma=2.0, **common)
    assert float(wrapped(x, labels)) == pytest.approx(float(direct(x, labels)), rel=1e-12)
    mixed = ClassWeightedLoss(get_loss("mixed_focal", **common), "running")
    mixed(x, labels)
    running = mixed.class_weights.weights()
    kept_running = running if include_background else running[1:]
    assert mixed.loss.focal.alpha == pytest.approx((0.25 * kept_running).tolist())
    with pytest.raises(TypeError, match="CategoricalFocalLoss"):
        ClassWeightedLoss(get_loss("dice"), weights)
    with pytest.raises(ValueError, match="3 channels"):
        ClassWeightedLoss(get_loss("focal", **common), [1.0, 2.0])(x, labels)


def test_class_weighted_deep_supervision_updates_once_per_step():
    """ClassWeightedLoss around MONAI's DeepSupervisionLoss: a list of outputs, one update from the full label."""
    from monai.losses import DeepSupervisionLoss

    labels = torch.randint(0, 3, (2, 1, 8, 8), generator=torch.Generator().manual_seed(0)).float()
    outputs = [torch.randn(2, 3, 8 // 2**k, 8 // 2**k, requires_grad=True) for k in range(3)]
    loss = ClassWeightedLoss(DeepSupervisionLoss(get_loss("mixed_focal", softmax=True, to_onehot_y=True)), "running")
    value = loss(outputs, labels)
    value.backward()
    assert torch.isfinite(value) and all(torch.isfinite(out.grad).all() for out in outputs)
    assert loss.class_weights.num_updates == 1
    alone = RunningClassWeights()
    alone.update(labels, num_classes=3)
    assert torch.equal(loss.class_weights.weights(), alone.weights())
    with pytest.raises(TypeError, match="a tensor or a list of tensors"):
        loss("not a tensor", labels)


def test_running_weights_from_a_metatensor_target_are_plain_tensors():
    """MONAI loaders give MetaTensor labels: their metadata must not travel into the weights or the loss value."""
    from monai.data import MetaTensor

    labels = MetaTensor(torch.randint(0, 3, (2, 1, 4, 4)), meta={"filename_or_obj": "case.nii.gz"})
    loss = SigmoidFocalLoss(class_weights="running", to_onehot_y=True)
    value = loss(torch.randn(2, 3, 4, 4), labels)
    assert type(loss.class_weights.frequency) is torch.Tensor and type(value) is torch.Tensor


def test_ignite_logger_and_bundle_config(caplog):
    config = {
        "loss": {
            "_target_": "monai_mixedfocal.losses.SigmoidFocalLoss",
            "class_weights": "running",
            "to_onehot_y": True,
        },
        "handler": {
            "_target_": "monai_mixedfocal.losses.class_weights.ClassWeightsLogger",
            "source": "@loss",
            "class_names": ["background", "kidney", "tumour"],
        },
    }
    parser = ConfigParser(config)
    loss, handler = parser.get_parsed_content("loss"), parser.get_parsed_content("handler")
    gen = torch.Generator().manual_seed(0)

    def step(engine, batch):
        x = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
        value = loss(x, torch.randint(0, 3, (2, 1, 4, 4), generator=gen))
        value.backward()
        return value.item()

    engine = Engine(step)
    handler.attach(engine)
    with caplog.at_level(logging.INFO):
        engine.run(range(3), max_epochs=2)
    assert [epoch for epoch, _ in handler.history] == [1, 2]
    assert handler.history[-1][1] == pytest.approx(loss.class_weights.weights().tolist())
    assert any("Epoch 2 class_weights (running): background=" in r.getMessage() for r in caplog.records)
    with pytest.raises(TypeError, match="class_weights"):
        ClassWeightsLogger(SigmoidFocalLoss())
