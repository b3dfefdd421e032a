# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Argument and input validation of the loss family: every bad input gets a clear error naming the problem.

Each test checks the exception type AND a fragment of its message (the value or shapes received and what was expected).
The MONAI warnings for flags that a single-channel input ignores must point at the caller's line (this file), not into
the package or ``torch.nn.Module.__call__``.
"""

from __future__ import annotations

import inspect
import math
import re
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.nn.modules.loss import _Loss

from monai_mixedfocal.losses import (
    LOSS_NAMES,
    PAPER_PRESETS,
    AsymmetricSigmoidFocalLoss,
    CategoricalFocalLoss,
    ComboLoss,
    CosineTverskyLoss,
    FocalTverskyLoss,
    MixedFocalLoss,
    ModifiedDiceLoss,
    Poly1Loss,
    SigmoidFocalLoss,
    UnifiedFocalLoss,
    get_loss,
    loss_class,
)
from monai_mixedfocal.losses._fused import use_fused_mode

ALL_CLASSES: tuple[type[_Loss], ...] = (
    ModifiedDiceLoss,
    FocalTverskyLoss,
    CosineTverskyLoss,
    CategoricalFocalLoss,
    ComboLoss,
    MixedFocalLoss,
)
CLASS_IDS = [cls.__name__ for cls in ALL_CLASSES]
COMPOUND_CLASSES: tuple[type[_Loss], ...] = (ComboLoss, MixedFocalLoss)
# Classes with a false-negative weight ``delta``.
DELTA_CLASSES = tuple(cls for cls in ALL_CLASSES if cls is not CategoricalFocalLoss)
# Classes whose constructor takes ``alpha`` as (non-negative) focal class weights.
ALPHA_WEIGHT_CLASSES: tuple[type[_Loss], ...] = (CategoricalFocalLoss, MixedFocalLoss)


def _logits(channels: int = 3, batch: int = 2, spatial: tuple[int, ...] = (4, 4)) -> torch.Tensor:
    return torch.randn(batch, channels, *spatial, generator=torch.Generator().manual_seed(0))


def _labels(batch: int = 2, spatial: tuple[int, ...] = (4, 4), high: int = 3) -> torch.Tensor:
    return torch.randint(0, high, (batch, 1, *spatial), generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------------------------------- forward: shapes
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=CLASS_IDS)
def test_shape_mismatch_shows_both_shapes(cls: type[_Loss]) -> None:
    loss = cls(softmax=True)
    with pytest.raises(ValueError, match=re.escape("(2, 3, 4, 4)")) as info:
        loss(_logits(), torch.zeros(2, 3, 4, 5))
    assert "(2, 3, 4, 5)" in str(info.value)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=CLASS_IDS)
def test_target_with_wrong_channel_count(cls: type[_Loss]) -> None:
    """A dense target must have the input's channels; an index target (to_onehot_y) must have one channel."""
    with pytest.raises(ValueError, match=re.escape("(2, 2, 4, 4)")):
        cls(softmax=True)(_logits(), torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="to_onehot_y") as info:
        cls(softmax=True, to_onehot_y=True)(_logits(), torch.zeros(2, 3, 4, 4))
    assert "(2, 3, 4, 4)" in str(info.value)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=CLASS_IDS)
def test_target_with_wrong_number_of_dimensions(cls: type[_Loss]) -> None:
    """A [B, H, W] label map (no channel axis) is rejected with both shapes, as MONAI rejects it."""
    with pytest.raises(ValueError, match=re.escape("(2, 4, 4)")):
        cls(softmax=True, to_onehot_y=True)(_logits(), _labels()[:, 0])


def test_input_without_spatial_dimensions() -> None:
    with pytest.raises(ValueError, match=re.escape("(2, 3)")):
        ModifiedDiceLoss(softmax=True)(torch.randn(2, 3), torch.zeros(2, 3))


@pytest.mark.parametrize("mode", ["off", "eager"])
@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 3, 0, 4)], ids=["no-image", "no-voxel"])
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=CLASS_IDS)
def test_empty_input(cls: type[_Loss], shape: tuple[int, ...], mode: str) -> None:
    labels = torch.zeros(shape[0], 1, *shape[2:], dtype=torch.long)
    with use_fused_mode(mode), pytest.raises(ValueError, match=re.escape(f"input has no elements (shape {shape})")):
        cls(softmax=True, to_onehot_y=True)(torch.randn(shape), labels)


@pytest.mark.parametrize("mode", ["off", "eager"])
def test_zero_smooth_dr_on_an_absent_class_says_so(mode: str) -> None:
    """smooth_dr=0 is allowed (the exact formulas), but 0/0 for a class with neither target nor prediction says why."""
    labels = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    probabilities = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 3, 1, 2).double()
    loss = ModifiedDiceLoss(smooth_nr=0.0, smooth_dr=0.0, to_onehot_y=True)
    with use_fused_mode(mode), pytest.raises(FloatingPointError, match=r"smooth_dr=0.*use smooth_dr > 0"):
        loss(probabilities, labels)


# --------------------------------------------------------------------------------------------- forward: label values
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=CLASS_IDS)
@pytest.mark.parametrize(
    ("bad_value", "fragment"),
    [(3, r"\[0, 2\].*3"), (7, r"\[0, 2\].*7"), (-1, r"\[0, 2\].*-1")],
    ids=["equal_to_C", "above_C", "negative"],
)
def test_label_values_out_of_range(cls: type[_Loss], bad_value: int, fragment: str) -> None:
    """The message names the valid range [0, C-1] and the bad value received."""
    labels = _labels()
    labels[1, 0, 2, 3] = bad_value
    with pytest.raises(ValueError, match=fragment):
        cls(softmax=True, to_onehot_y=True)(_logits(), labels)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=CLASS_IDS)
def test_non_integer_label_values(cls: type[_Loss]) -> None:
    labels = _labels().float()
    labels[0, 0, 0, 0] = 0.5
    with pytest.raises(ValueError, match="integer"):
        cls(softmax=True, to_onehot_y=True)(_logits(), labels)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=CLASS_IDS)
def test_dense_target_outside_unit_interval(cls: type[_Loss]) -> None:
    """A label map passed without to_onehot_y is caught (values > 1 in a one-hot target)."""
    target = torch.zeros(2, 3, 4, 4)
    target[0, 0, 0, 0] = 2.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cls(softmax=True)(_logits(), target)


# ------------------------------------------------------------------------------------------- forward: NaN / inf values
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=CLASS_IDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("activation", [{"softmax": True}, {"sigmoid": True}, {}], ids=["softmax", "sigmoid", "probs"])
def test_non_finite_input(cls: type[_Loss], bad: float, activation: dict) -> None:
    inputs = _logits() if activation else torch.softmax(_logits(), dim=1)
    inputs[0, 1, 2, 2] = bad
    with pytest.raises(ValueError, match=r"input contains NaN ?(/|or) ?inf"):
        cls(to_onehot_y=True, **activation)(inputs, _labels())


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=CLASS_IDS)
@pytest.mark.parametrize("mode", ["off", "eager"], ids=["plain", "fused"])
def test_logits_without_an_activation_are_refused(cls: type[_Loss], mode: str) -> None:
    """Logits passed as probabilities (softmax=True forgotten: the registry presets set no activation) were clipped to
    [1e-7, 1 - 1e-7] and got no gradient at most voxels; within a rounding tolerance of [0, 1] they still pass, and
    an other_act's output (MONAI allows e.g. tanh) is the user's choice."""
    logits, labels = _logits(), _labels()
    with use_fused_mode(mode), pytest.raises(ValueError, match=r"taken as probabilities .* softmax=True") as info:
        cls(to_onehot_y=True)(logits, labels)
    low, high = torch.aminmax(logits)
    assert f"[{float(low):.4g}, {float(high):.4g}]" in str(info.value)
    with use_fused_mode(mode), pytest.raises(ValueError, match="taken as probabilities"):
        cls(to_onehot_y=True)(logits[:, :1], labels.clamp(max=1))  # one channel: binary probabilities
    probabilities = torch.softmax(logits, dim=1)
    probabilities[0, 0, 0, 0] = 1.0005  # rounding of the user's own computation
    probabilities[1, 2, 3, 3] = -0.0005
    with use_fused_mode(mode):
        assert torch.isfinite(cls(to_onehot_y=True)(probabilities, labels))
        assert torch.isfinite(cls(to_onehot_y=True, other_act=torch.tanh)(logits, labels))
    probabilities[0, 0, 0, 0] = 1.01  # beyond rounding
    with use_fused_mode(mode), pytest.raises(ValueError, match=r"values in \[-0.0005, 1.01\]"):
        cls(to_onehot_y=True)(probabilities, labels)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=CLASS_IDS)
def test_nan_in_target(cls: type[_Loss]) -> None:
    target = torch.zeros(2, 3, 4, 4)
    target[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        cls(softmax=True)(_logits(), target)


# --------------------------------------------------------------------------------------- constructor: parameter ranges
RANGE_CASES: list[tuple[Callable[[], _Loss], str]] = [
    # delta, lambda_focal, beta and the compound alpha must lie in [0, 1]
    *[
        (partial(cls, delta=bad), "delta")
        for cls in ALL_CLASSES
        if cls is not CategoricalFocalLoss
        for bad in (-0.1, 1.5)
    ],
    (partial(MixedFocalLoss, lambda_focal=-0.01), "lambda_focal"),
    (partial(MixedFocalLoss, lambda_focal=1.2), "lambda_focal"),
    (partial(CategoricalFocalLoss, beta=1.01), "beta"),
    (partial(CategoricalFocalLoss, beta=-0.5), "beta"),
    (partial(ComboLoss, beta=2.0), "beta"),
    (partial(MixedFocalLoss, beta=-1.0), "beta"),
    (partial(ComboLoss, alpha=1.5), "alpha"),
    (partial(ComboLoss, alpha=-0.5), "alpha"),
    # focal Tversky: gamma is the denominator of the exponent 1 / gamma
    (partial(FocalTverskyLoss, gamma=0.0), "gamma"),
    (partial(FocalTverskyLoss, gamma=-1.0), "gamma"),
    (partial(MixedFocalLoss, gamma_tversky=0.0), "gamma_tversky"),
    # cosine Tversky: gamma > 0
    (partial(CosineTverskyLoss, gamma=0.0), "gamma"),
    # focal: gamma >= 0
    (partial(CategoricalFocalLoss, gamma=-0.5), "gamma"),
    (partial(MixedFocalLoss, gamma_focal=-1.0), "gamma_focal"),
    # class weights must be non-negative
    (partial(CategoricalFocalLoss, alpha=-0.25), "alpha"),
    (partial(CategoricalFocalLoss, alpha=[0.2, -0.1, 0.5]), "alpha"),
    (partial(MixedFocalLoss, alpha=-1.0), "alpha"),
    (partial(MixedFocalLoss, alpha=[1.0, 1.0, -1.0]), "alpha"),
    # smoothing terms must be non-negative
    *[(partial(cls, smooth_nr=-1e-5), "smooth_nr") for cls in ALL_CLASSES],
    *[(partial(cls, smooth_dr=-1e-5), "smooth_dr") for cls in ALL_CLASSES],
    # every number must be finite (an infinite gamma gave a finite loss with an all-NaN gradient)
    *[
        (partial(cls, **{name: bad}), name)
        for cls, names in {
            CategoricalFocalLoss: ("gamma", "alpha"),
            CosineTverskyLoss: ("gamma", "smooth_nr"),
            FocalTverskyLoss: ("gamma",),
            MixedFocalLoss: ("gamma_focal", "gamma_tversky"),
            ModifiedDiceLoss: ("smooth_dr",),
            ComboLoss: ("smooth_nr",),
            SigmoidFocalLoss: ("gamma", "gamma_neg", "poly_epsilon"),
            Poly1Loss: ("gamma", "epsilon"),
        }.items()
        for name in names
        for bad in (math.inf, math.nan)
    ],
]


def _case_id(case: tuple[Callable[[], _Loss], str]) -> str:
    factory = case[0]
    assert isinstance(factory, partial)
    return f"{factory.func.__name__}({','.join(f'{k}={v}' for k, v in factory.keywords.items())})"


@pytest.mark.parametrize(("factory", "name"), RANGE_CASES, ids=[_case_id(c) for c in RANGE_CASES])
def test_parameter_out_of_range(factory: Callable[[], _Loss], name: str) -> None:
    """The message names the parameter and the value received."""
    assert isinstance(factory, partial)
    value = factory.keywords[name]
    with pytest.raises(ValueError, match=re.escape(name)) as info:
        factory()
    assert str(value) in str(info.value), f"the message should show the value received: {info.value}"


@pytest.mark.parametrize("cls", [FocalTverskyLoss, CosineTverskyLoss, MixedFocalLoss, UnifiedFocalLoss])
def test_smoothing_that_lets_the_tversky_index_exceed_one(cls: type[_Loss]) -> None:
    """A power of ``1 - index`` has no real value for an index above 1 (it was silently clamped)."""
    with pytest.raises(ValueError, match=rf"{cls.__name__} needs smooth_nr <= smooth_dr \(got 1.0 > 0.01\)"):
        cls(smooth_nr=1.0, smooth_dr=0.01)
    cls(smooth_nr=0.01, smooth_dr=0.01)  # equal terms: the index is at most 1
    ModifiedDiceLoss(smooth_nr=1.0, smooth_dr=0.01)  # no power: the loss is linear in the index, as in MONAI


@pytest.mark.parametrize(
    "factory",
    [
        partial(ModifiedDiceLoss, delta=0.0),
        partial(ModifiedDiceLoss, delta=1.0),
        partial(CategoricalFocalLoss, gamma=0.0, alpha=0.0, beta=1.0),
        partial(MixedFocalLoss, lambda_focal=0.0, beta=0.0),
        partial(ComboLoss, alpha=1.0, beta=1.0),
        partial(CosineTverskyLoss, gamma=1e-3),
        partial(FocalTverskyLoss, gamma=1e-3),
    ],
    ids=lambda f: f"{f.func.__name__}({f.keywords})",
)
def test_boundary_values_are_accepted(factory: Callable[[], _Loss]) -> None:
    """The closed ends of the ranges are valid and give a finite loss."""
    value = factory(softmax=True, to_onehot_y=True)(_logits(), _labels())
    assert torch.isfinite(value)


@pytest.mark.parametrize("cls", ALPHA_WEIGHT_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("alpha", "include_background", "expected"),
    [([0.5, 0.5], True, 3), ([0.2, 0.3, 0.5], False, 2), ([1.0] * 4, True, 3)],
    ids=["too_short", "background_dropped", "too_long"],
)
def test_alpha_sequence_of_the_wrong_length(
    cls: type[_Loss], alpha: list[float], include_background: bool, expected: int
) -> None:
    """The message gives the number of weights received and the number of channels seen."""
    loss = cls(alpha=alpha, softmax=True, to_onehot_y=True, include_background=include_background)
    with pytest.raises(ValueError, match=rf"{len(alpha)}.*{expected} channels"):
        loss(_logits(), _labels())


@pytest.mark.parametrize("cls", ALPHA_WEIGHT_CLASSES, ids=lambda c: c.__name__)
def test_alpha_sequence_of_the_right_length_is_accepted(cls: type[_Loss]) -> None:
    loss = cls(alpha=[0.3, 0.7], softmax=True, to_onehot_y=True, include_background=False)
    assert torch.isfinite(loss(_logits(), _labels()))


@pytest.mark.parametrize("cls", ALPHA_WEIGHT_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("scalar", [np.float32(0.25), np.float64(0.25), torch.tensor(0.25)], ids=repr)
def test_alpha_scalar_of_numpy_or_torch_is_a_scalar(cls: type[_Loss], scalar: object) -> None:
    loss = cls(alpha=scalar, softmax=True, to_onehot_y=True)
    assert getattr(loss, "focal", loss).alpha == 0.25  # MixedFocalLoss keeps it in its focal part
    reference = cls(alpha=0.25, softmax=True, to_onehot_y=True)
    assert float(loss(_logits(), _labels())) == float(reference(_logits(), _labels()))


# ------------------------------------------------------------------------------------------- constructor: activations
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=CLASS_IDS)
@pytest.mark.parametrize(
    "flags",
    [
        {"sigmoid": True, "softmax": True},
        {"softmax": True, "other_act": torch.tanh},
        {"sigmoid": True, "other_act": torch.tanh},
    ],
    ids=["sigmoid+softmax", "softmax+other_act", "sigmoid+other_act"],
)
def test_conflicting_activation_flags(cls: type[_Loss], flags: dict) -> None:
    """The message names the three mutually exclusive options."""
    with pytest.raises(ValueError, match="sigmoid") as info:
        cls(**flags)
    assert "softmax" in str(info.value) and "other_act" in str(info.value)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=CLASS_IDS)
def test_non_callable_other_act(cls: type[_Loss]) -> None:
    """TypeError naming the argument and the type received."""
    with pytest.raises(TypeError, match="other_act") as info:
        cls(other_act="softmax")
    assert "str" in str(info.value)


# ---------------------------------------------------------------------------------------------------------- reduction
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=CLASS_IDS)
def test_unknown_reduction(cls: type[_Loss]) -> None:
    with pytest.raises(ValueError, match="average"):
        cls(reduction="average")


@pytest.mark.parametrize("cls", COMPOUND_CLASSES, ids=lambda c: c.__name__)
def test_reduction_none_rejected_by_compound_losses(cls: type[_Loss]) -> None:
    """As MONAI DiceCELoss: the two parts have different unreduced shapes, so only "mean" and "sum" are accepted."""
    with pytest.raises(ValueError, match="none") as info:
        cls(reduction="none")
    assert "mean" in str(info.value) and "sum" in str(info.value)


# ----------------------------------------------------------------------------------------------------------- registry
def test_unknown_loss_name_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="nope") as info:
        get_loss("nope")
    for name in LOSS_NAMES:
        assert name in str(info.value)


def test_an_unknown_argument_names_the_loss_and_the_closest_arguments() -> None:
    """A misspelt keyword is not swallowed; the error names the loss (Python's own named the base class that refused
    it: ``SegmentationLoss.__init__() got an unexpected keyword argument``), the closest names and all of them."""
    with pytest.raises(TypeError, match=r"ModifiedDiceLoss takes no argument 'sofmax' \(did you mean 'softmax'\?\)"):
        get_loss("dice", sofmax=True)
    with pytest.raises(TypeError, match=r"MixedFocalLoss takes no argument 'gamma' \(did you mean 'gamma_focal'\?\)"):
        get_loss("mixed_focal", gamma=2.0)
    with pytest.raises(TypeError, match=r"takes no argument 'weight'; its arguments are: delta, include_background, "):
        get_loss("dice", weight=1.0)
    with pytest.raises(TypeError, match=r"MixedFocalLoss takes no argument 'gamma' \(did you mean 'gamma_focal'\?\)"):
        MixedFocalLoss(gamma=2.0)  # a class built directly says the same


@pytest.mark.parametrize(
    ("name", "kwargs", "hint"),
    [
        ("dice", {"squared_pred": True}, "MONAI DiceLoss's squared_pred is not offered"),
        ("focal", {"ignore_index": 255}, "MONAI's ignore_index is not offered: every voxel of the target counts"),
        ("focal", {"weight": [1.0, 2.0, 3.0]}, "MONAI's per-class weight is alpha with one value per kept class"),
        ("dice", {"weight": [1.0, 2.0, 3.0]}, "MONAI's per-class weight is not offered by ModifiedDiceLoss; the"),
        ("focal_tversky", {"weight": 2.0}, "not offered by FocalTverskyLoss; the losses that take alpha take one"),
        ("tversky", {"alpha": 0.3, "beta": 0.7}, "MONAI TverskyLoss's alpha (the false-positive weight) is 1 - delta"),
        ("tversky", {"beta": 0.7}, "MONAI TverskyLoss's beta (the false-negative weight) is delta here."),
    ],
)
def test_an_argument_of_monai_s_losses_says_what_to_use_here(name: str, kwargs: dict[str, Any], hint: str) -> None:
    with pytest.raises(TypeError, match="its arguments are: ") as info:
        get_loss(name, softmax=True, to_onehot_y=True, **kwargs)
    assert hint in str(info.value)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
def test_every_loss_class_refuses_an_unknown_argument_by_its_own_name(cls: type[_Loss]) -> None:
    with pytest.raises(TypeError, match=rf"^{cls.__name__} takes no argument 'no_such_argument'; its arguments are: "):
        cls(no_such_argument=1)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_argument_of_a_registry_loss_is_accepted_by_name(name: str) -> None:
    """The check of the argument names knows every argument each loss takes (its own and its base classes')."""
    cls, preset = PAPER_PRESETS[name]
    arguments = dict(inspect.signature(cls).parameters)
    assert preset.keys() <= arguments.keys() or any(p.kind is p.VAR_KEYWORD for p in arguments.values())
    get_loss(name, **preset, include_background=True, reduction="mean", batch=False, smooth_nr=1e-6, smooth_dr=1e-6)


# ----------------------------------------------------------------------------------------------------------- warnings
SINGLE_CHANNEL_FLAGS = [
    ({"softmax": True}, "softmax=True"),
    ({"to_onehot_y": True}, "to_onehot_y=True"),
    ({"include_background": False}, "include_background=False"),
]


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=CLASS_IDS)
@pytest.mark.parametrize(("flags", "fragment"), SINGLE_CHANNEL_FLAGS, ids=[f[1] for f in SINGLE_CHANNEL_FLAGS])
def test_single_channel_warnings_point_at_the_caller(cls: type[_Loss], flags: dict, fragment: str) -> None:
    """MONAI behaviour: the flag is ignored with a warning; the warning's location is the caller's line (this file)."""
    loss = cls(**flags)
    probs = torch.rand(2, 1, 4, 4)
    target = (torch.rand(2, 1, 4, 4) > 0.5).float()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = loss(probs, target)
    matching = [w for w in caught if fragment in str(w.message) and "single channel" in str(w.message)]
    assert len(matching) == 1, [str(w.message) for w in caught]
    assert matching[0].filename == __file__, f"warning points at {matching[0].filename}:{matching[0].lineno}"
    assert torch.isfinite(value)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=CLASS_IDS)
def test_single_channel_flags_are_ignored(cls: type[_Loss]) -> None:
    """With the warnings silenced, the ignored flags do not change the value."""
    probs = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    target = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flagged = cls(softmax=True, to_onehot_y=True, include_background=False)(probs, target)
    assert torch.allclose(flagged, cls()(probs, target))


EXTRA_PRESETS = [name for name in LOSS_NAMES if PAPER_PRESETS[name][0] not in ALL_CLASSES]


@pytest.mark.parametrize("name", EXTRA_PRESETS)
@pytest.mark.parametrize(("flags", "fragment"), SINGLE_CHANNEL_FLAGS[1:], ids=[f[1] for f in SINGLE_CHANNEL_FLAGS[1:]])
def test_single_channel_warnings_of_the_other_presets(name: str, flags: dict, fragment: str) -> None:
    """The registry's other losses (Unified Focal, sigmoid focal, Poly-1) warn at the caller's line too."""
    loss = get_loss(name, **flags)
    logits = torch.randn(2, 1, 4, 4)
    target = (torch.rand(2, 1, 4, 4) > 0.5).float()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = loss(logits if isinstance(loss, SigmoidFocalLoss) else torch.sigmoid(logits), target)
    matching = [w for w in caught if fragment in str(w.message) and "single channel" in str(w.message)]
    assert len(matching) == 1, [str(w.message) for w in caught]
    assert matching[0].filename == __file__, f"warning points at {matching[0].filename}:{matching[0].lineno}"
    assert torch.isfinite(value)


def test_warnings_skip_torch_but_not_a_folder_whose_name_starts_like_it(tmp_path: Path, monkeypatch) -> None:
    """``warn_caller`` skips the frames of ``torch/`` (``nn.Module.__call__``), not those of e.g. ``torchvision/``."""
    import importlib.util

    from monai_mixedfocal.losses import _base

    monkeypatch.setattr(_base, "_TORCH_DIR", str(tmp_path / "torch"))
    caller = tmp_path / "torchvision" / "caller.py"
    caller.parent.mkdir()
    caller.write_text(
        "from monai_mixedfocal.losses._base import warn_caller\n\n\ndef call():\n    warn_caller('here')\n"
    )
    spec = importlib.util.spec_from_file_location("caller_beside_torch", caller)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.warns(UserWarning, match="here") as record:
        module.call()
    assert (record[0].filename, record[0].lineno) == (str(caller), 5)


# ------------------------------------------------------------------------------- constructor: types and replaced names
@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (partial(ModifiedDiceLoss, smooth_dr="1e-5"), TypeError, r"smooth_dr must be a number; got '1e-5' \(str\)"),
        (partial(ModifiedDiceLoss, delta="0.5"), TypeError, "delta must be a number; got '0.5'"),
        (partial(ModifiedDiceLoss, delta=False), TypeError, r"delta must be a number; got False \(bool\)"),  # was 0
        (partial(CategoricalFocalLoss, alpha="0.25"), TypeError, "alpha must be a number; got '0.25'"),
        (partial(CategoricalFocalLoss, alpha=True), TypeError, "alpha must be a number; got True"),
        (partial(CategoricalFocalLoss, alpha=[[0.2, 0.3], [0.1, 0.2]]), ValueError, r"flat sequence .* \(2, 2\)"),
        (partial(CategoricalFocalLoss, alpha=["a", "b"]), TypeError, "a sequence of numbers"),
        (partial(SigmoidFocalLoss, alpha=[0.2, 0.3]), TypeError, r"alpha must be a number; got \[0.2, 0.3\]"),
        (partial(ComboLoss, alpha=[0.2, 0.3]), TypeError, "alpha must be a number"),
        (partial(AsymmetricSigmoidFocalLoss, gamma=2.0), TypeError, "takes gamma_pos and gamma_neg, not gamma"),
        (partial(AsymmetricSigmoidFocalLoss, gamma_pos=-1.0), ValueError, "gamma_pos must be >= 0"),
        (partial(UnifiedFocalLoss, rare_classes=[]), ValueError, "rare_classes must be a non-empty sequence"),
        (partial(UnifiedFocalLoss, rare_classes=[1.7]), ValueError, "of integer channel indices"),  # was 1
    ],
)
def test_arguments_of_the_wrong_type_are_named(make: Callable[[], _Loss], error: type, message: str) -> None:
    """Python's own words before ('>=' not supported between 'str' and 'float', "new(): invalid data type 'str'"), a
    value silently changed (delta=False as 0, rare_classes=[1.7] as 1, a nested alpha flattened), or an error at the
    first call (rare_classes=[]: max() arg is an empty sequence)."""
    with pytest.raises(error, match=message):
        make()


def test_numbers_of_numpy_and_torch_are_numbers() -> None:
    assert ModifiedDiceLoss(delta=np.float64(0.6)).delta == 0.6
    assert CategoricalFocalLoss(alpha=torch.tensor(0.5)).alpha == 0.5
    assert UnifiedFocalLoss(rare_classes=[np.int64(2)]).rare_classes == (2,)


def test_replaced_and_sigmoid_only_arguments_of_the_registry() -> None:
    """The asymmetric loss's typo hint listed gamma, which it refused with Python's 'got multiple values'; every
    registry class answers sigmoid_only (AttributeError for 12 of 14 names before)."""
    with pytest.raises(TypeError, match="did you mean 'gamma_pos' or 'gamma_neg'") as info:
        AsymmetricSigmoidFocalLoss(gama=2.0)
    assert "gamma," not in str(info.value)
    assert {name: loss_class(name).sigmoid_only for name in LOSS_NAMES} == {
        name: name in ("sigmoid_focal", "asymmetric_focal") for name in LOSS_NAMES
    }


def test_a_label_map_for_a_one_channel_output_says_that_it_has_one_channel() -> None:
    """The message said to pass class indices with to_onehot_y=True, which the user had done (it does not apply to
    one channel); MONAI returns a value for these inputs."""
    with (
        pytest.warns(UserWarning, match="single channel"),
        pytest.raises(ValueError, match="The input has one channel"),
    ):
        get_loss("dice", sigmoid=True, to_onehot_y=True)(_logits(channels=1), _labels())
