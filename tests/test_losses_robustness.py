# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Robustness of every loss: finite values and gradients on degenerate inputs, a training signal, a short training.

Every registry preset and the non-default forms of every class are run in the input modes they support (softmax logits
with ``to_onehot_y``, one-channel sigmoid logits, three-channel multi-label sigmoid logits, probabilities with a
one-hot target) on degenerate inputs: logits of +/-100 that are confidently right or confidently wrong, a perfect
prediction, an empty class, an all-background patch, a batch of two where one image has no foreground; with
``batch`` / ``include_background`` / ``reduction`` options; in float32, and in float16 / bfloat16 given directly or
under CPU autocast. Nothing may give NaN or inf in the value or the gradient, and the value must be float32.

Training signal: with logits, every loss with a log-space cross-entropy term keeps a gradient at every voxel of a
confidently-wrong prediction. Region losses get no gradient through a saturated softmax (float32
``softmax([100, -100, -100])`` is exactly one-hot) but do on moderately wrong logits. With probabilities, the authors'
clip to ``[1e-7, 1 - 1e-7]`` zeroes the gradient of the clipped terms (cross entropy, focal, focal Tversky, hence
Mixed Focal) at probabilities of exactly 0 or 1; plain Dice / Tversky / cosine Tversky are not clipped.

Last, a few dozen Adam steps on a free logit tensor must lower every preset's loss and raise the hard Dice overlap with
a small random label map. The exhaustive option x precision matrix is marked ``slow``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from monai.metrics import compute_dice
from torch.nn.modules.loss import _Loss

from monai_mixedfocal.losses import (
    LOSS_NAMES,
    PAPER_PRESETS,
    CategoricalFocalLoss,
    ClassWeightedLoss,
    ComboLoss,
    CosineTverskyLoss,
    FocalTverskyLoss,
    MixedFocalLoss,
    ModifiedDiceLoss,
    Poly1Loss,
    SigmoidFocalLoss,
    UnifiedFocalLoss,
    get_loss,
)

NUM_CLASSES = 3
EXTREME = 100.0
SPATIAL = (4, 5)


@dataclass(frozen=True)
class Mode:
    """One way of feeding the losses.

    Attributes:
        name: test id.
        channels: channels of the network output.
        kwargs: constructor arguments of the mode.
        logits: the input is logits (else probabilities).
    """

    name: str
    channels: int
    kwargs: dict = field(default_factory=dict)
    logits: bool = True

    def make(self, labels: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Build ``(input, target)`` from class labels ``[B, 1, *S]`` and class scores ``[B, NUM_CLASSES, *S]``.

        One-channel modes use the foreground logit ``logsumexp(scores[:, 1:]) - scores[:, 0]`` (foreground = any class
        but 0) and the target ``labels > 0``. The probability mode feeds ``softmax(scores)`` (exactly 0 and 1 for
        scores of +/-100) and a one-hot target.
        """
        if self.channels == 1:
            foreground = torch.logsumexp(scores[:, 1:], dim=1, keepdim=True) - scores[:, :1]
            return foreground, (labels > 0).float()
        if self.logits:
            return scores, labels.float()
        return torch.softmax(scores, dim=1), F.one_hot(labels[:, 0], NUM_CLASSES).movedim(-1, 1).float()


SOFTMAX = Mode("softmax", NUM_CLASSES, {"softmax": True, "to_onehot_y": True})
SIGMOID1 = Mode("sigmoid1", 1, {"sigmoid": True})
SIGMOID3 = Mode("sigmoid3", NUM_CLASSES, {"sigmoid": True, "to_onehot_y": True})
# sigmoid=False explicitly: SigmoidFocalLoss applies a sigmoid by default.
PROBABILITIES = Mode("probabilities", NUM_CLASSES, {"sigmoid": False}, logits=False)
MODES = {mode.name: mode for mode in (SOFTMAX, SIGMOID1, SIGMOID3, PROBABILITIES)}


def _modes_of(cls: type) -> tuple[str, ...]:
    """The input modes a class supports: sigmoid losses take no softmax; Unified Focal takes no multi-label sigmoid."""
    if issubclass(cls, SigmoidFocalLoss):
        return ("sigmoid1", "sigmoid3", "probabilities")
    if issubclass(cls, UnifiedFocalLoss):
        return ("softmax", "sigmoid1", "probabilities")
    return tuple(MODES)


# name -> (factory, supported modes): every registry preset, plus the non-default forms of each class.
LOSSES: dict[str, tuple[Callable[..., _Loss], tuple[str, ...]]] = {
    name: (partial(get_loss, name), _modes_of(PAPER_PRESETS[name][0])) for name in LOSS_NAMES
}
for _factory in (
    partial(ModifiedDiceLoss, delta=0.3),
    partial(FocalTverskyLoss, gamma=0.75),
    partial(CosineTverskyLoss, gamma=2.5),
    partial(CategoricalFocalLoss, gamma=0.5, beta=0.7),
    partial(ComboLoss, alpha=0.5, beta=0.7),
    partial(ComboLoss, alpha=0.5, delta=0.7),
    partial(MixedFocalLoss, lambda_focal=0.5, beta=0.7),
    partial(SigmoidFocalLoss, normalize_by_positives=True, poly_epsilon=1.0),
    partial(Poly1Loss, epsilon=-1.0, gamma=2.0),
    partial(UnifiedFocalLoss, asymmetric=True, class_weights="running"),
):
    _name = f"{_factory.func.__name__}({','.join(f'{k}={v}' for k, v in _factory.keywords.items())})"
    LOSSES[_name] = (_factory, _modes_of(_factory.func))


def _class_weighted_mixed_focal(**kwargs: object) -> _Loss:
    """The Mixed Focal loss with class weights that follow the label frequencies of the batches."""
    return ClassWeightedLoss(MixedFocalLoss(**kwargs), "running")


LOSSES["ClassWeightedLoss(MixedFocalLoss,running)"] = (_class_weighted_mixed_focal, tuple(MODES))
CASES = [(name, mode) for name, (_, modes) in LOSSES.items() for mode in modes]
CASE_IDS = [f"{name}-{mode}" for name, mode in CASES]

# Registry presets with a log-space cross-entropy term and no probability margin: a gradient survives a saturated
# activation. (asymmetric_focal is left out: ASL's margin p_m = p - clip on the negatives is computed from p, so a
# saturated sigmoid gives it no gradient on confidently-wrong negatives, by design of the margin.)
PIXEL_PRESETS = (
    "cross_entropy",
    "focal",
    "combo",
    "mixed_focal",
    "unified_focal",
    "asymmetric_unified_focal",
    "sigmoid_focal",
    "poly1_ce",
    "poly1_focal",
)
REGION_PRESETS = ("dice", "tversky", "focal_tversky", "cosine_tversky")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _onehot_scores(labels: torch.Tensor, magnitude: float) -> torch.Tensor:
    """Scores ``+magnitude`` on the labelled class and ``-magnitude`` elsewhere, shape ``[B, NUM_CLASSES, *S]``."""
    return magnitude * (2.0 * F.one_hot(labels[:, 0], NUM_CLASSES).movedim(-1, 1).float() - 1.0)


def _wrong_scores(labels: torch.Tensor, magnitude: float) -> torch.Tensor:
    """Scores that predict class 0 on foreground voxels and class 1 on background: wrong in every mode."""
    return _onehot_scores((labels == 0).long(), magnitude)


def scenarios() -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """The degenerate cases as ``(name, labels [2, 1, *S], scores [2, NUM_CLASSES, *S])``."""
    labels = torch.randint(0, NUM_CLASSES, (2, 1, *SPATIAL), generator=_generator(0))
    labels[:, 0, 0, :NUM_CLASSES] = torch.arange(NUM_CLASSES)  # every class present in every image
    random_scores = torch.randn(2, NUM_CLASSES, *SPATIAL, generator=_generator(1))
    yield "random", labels, random_scores
    yield "confidently_right", labels, _onehot_scores(labels, EXTREME)
    yield "confidently_wrong", labels, _wrong_scores(labels, EXTREME)
    yield "perfect_moderate_logits", labels, _onehot_scores(labels, 20.0)
    two_class = labels.clamp(max=1)  # class 2 absent from the target ...
    absent = random_scores.clone()
    absent[:, 2] = -EXTREME  # ... and from the prediction
    yield "empty_class", two_class, absent
    background = torch.zeros_like(labels)
    yield "all_background", background, random_scores
    yield "all_background_perfect", background, _onehot_scores(background, EXTREME)
    one_empty = labels.clone()
    one_empty[1] = 0
    yield "one_image_without_foreground", one_empty, random_scores


# (id, input dtype, autocast dtype or None)
FLOAT32 = ("float32", torch.float32, None)
LOW_PRECISIONS = (
    ("float16", torch.float16, None),
    ("bfloat16", torch.bfloat16, None),
    ("float16_autocast_bf16", torch.float16, torch.bfloat16),
    ("bfloat16_autocast_bf16", torch.bfloat16, torch.bfloat16),
    ("float32_autocast_bf16", torch.float32, torch.bfloat16),
)
# The fast tests run the low precisions on these scenarios only (``slow``: on all of them, with every option).
EXTREME_SCENARIOS = ("confidently_right", "confidently_wrong", "empty_class", "all_background_perfect")
OPTIONS: tuple[dict, ...] = (
    {},
    {"batch": True},
    {"include_background": False},
    {"batch": True, "include_background": False, "reduction": "sum"},
)


def _check_finite(
    loss: _Loss, inputs: torch.Tensor, target: torch.Tensor, precision: tuple[str, torch.dtype, torch.dtype | None]
) -> list[str]:
    """Run ``loss`` forward and backward at ``precision``; return the problems found (empty when all is well)."""
    _, dtype, autocast = precision
    leaf = inputs.detach().to(dtype).requires_grad_(True)
    context = torch.autocast(device_type="cpu", dtype=autocast) if autocast else contextlib.nullcontext()
    with context:
        value = loss(leaf, target)
    problems = []
    if value.dtype != torch.float32:
        problems.append(f"value dtype {value.dtype}, expected torch.float32")
    if not torch.isfinite(value).all():
        problems.append(f"value not finite: {value}")
    value.sum().backward()
    if leaf.grad is None:
        problems.append("no gradient reached the input")
    elif not torch.isfinite(leaf.grad).all():
        problems.append(f"gradient not finite ({int((~torch.isfinite(leaf.grad)).sum())} entries)")
    return problems


def _run_matrix(loss_name: str, mode_name: str, options: tuple[dict, ...], precisions_of: Callable) -> None:
    """Check every scenario x option x precision (``precisions_of(scenario, options)``) and report all problems."""
    factory, _ = LOSSES[loss_name]
    mode = MODES[mode_name]
    problems = []
    for opts in options:
        if mode.channels == 1 and "include_background" in opts:
            continue  # ignored with a warning on one channel: covered by test_losses_validation.py
        loss = factory(**mode.kwargs, **opts)
        for scenario, labels, scores in scenarios():
            inputs, target = mode.make(labels, scores)
            for precision in precisions_of(scenario, opts):
                if _skip_known_float16_overflow(loss_name, mode, scenario, precision):
                    continue
                found = _check_finite(loss, inputs, target, precision)
                problems += [f"{scenario} {opts} {precision[0]}: {p}" for p in found]
    assert not problems, f"{loss_name} / {mode_name}:\n" + "\n".join(problems)


def _skip_known_float16_overflow(loss_name: str, mode: Mode, scenario: str, precision: tuple) -> bool:
    """Cases checked on their own by :func:`test_float16_probabilities_of_an_empty_class_keep_a_finite_gradient`."""
    return (not mode.logits) and precision[1] == torch.float16 and scenario in ("empty_class", "all_background_perfect")


def _fast_precisions(scenario: str, options: dict) -> tuple:
    """Fast set: float32 everywhere; with the default options also every low precision on the extreme scenarios."""
    if options or scenario not in EXTREME_SCENARIOS:
        return (FLOAT32,)
    return (FLOAT32, *LOW_PRECISIONS)


def _all_precisions(scenario: str, options: dict) -> tuple:
    return (FLOAT32, *LOW_PRECISIONS)


@pytest.mark.parametrize(("loss_name", "mode_name"), CASES, ids=CASE_IDS)
def test_finite_value_and_gradient(loss_name: str, mode_name: str) -> None:
    """Every scenario in float32, the extreme ones in float16 / bfloat16 (direct and under CPU autocast), gives a
    finite float32 value and a finite gradient."""
    _run_matrix(loss_name, mode_name, OPTIONS[:1], _fast_precisions)


@pytest.mark.parametrize(("loss_name", "mode_name"), CASES, ids=CASE_IDS)
def test_finite_with_batch_and_background_options(loss_name: str, mode_name: str) -> None:
    """``batch=True``, ``include_background=False`` and ``reduction="sum"`` on every scenario, float32."""
    _run_matrix(loss_name, mode_name, OPTIONS[1:], _fast_precisions)


@pytest.mark.slow
@pytest.mark.parametrize(("loss_name", "mode_name"), CASES, ids=CASE_IDS)
def test_finite_exhaustive_precision_matrix(loss_name: str, mode_name: str) -> None:
    """Every scenario x option x precision (float16 / bfloat16, direct and under CPU autocast, with every option)."""
    _run_matrix(loss_name, mode_name, OPTIONS, _all_precisions)


@pytest.mark.parametrize("loss_name", LOSS_NAMES)
def test_float16_probabilities_of_an_empty_class_keep_a_finite_gradient(loss_name: str) -> None:
    """float16 probabilities, an empty class predicted exactly empty: the gradient must fit in float16.

    The loss computes in float32; the gradient is cast back to the input's float16 on the way out. The Dice-family
    gradient with respect to the probability of an empty, exactly-empty class is ``(1 - delta) / (smooth_dr * B * K)``
    per voxel, which exceeds float16's 65504 with the default ``smooth_dr=1e-6`` (MONAI's 1e-5 does not).
    """
    factory, modes = LOSSES[loss_name]
    assert "probabilities" in modes
    labels = torch.zeros(2, 1, *SPATIAL, dtype=torch.long)
    inputs, target = PROBABILITIES.make(labels, _onehot_scores(labels, EXTREME))
    problems = _check_finite(factory(**PROBABILITIES.kwargs), inputs, target, LOW_PRECISIONS[0])
    assert not problems, problems


LOGIT_CASES = [(name, mode) for name, mode in CASES if mode != "probabilities"]


@pytest.mark.parametrize(("loss_name", "mode_name"), [c for c in LOGIT_CASES if c[0] in PIXEL_PRESETS])
def test_confidently_wrong_logits_keep_a_gradient_at_every_voxel(loss_name: str, mode_name: str) -> None:
    """Log-space cross entropy: logits of +/-100 on the wrong class still pull every voxel towards its label."""
    factory, _ = LOSSES[loss_name]
    mode = MODES[mode_name]
    labels = torch.randint(0, NUM_CLASSES, (2, 1, *SPATIAL), generator=_generator(2))
    inputs, target = mode.make(labels, _wrong_scores(labels, EXTREME))
    leaf = inputs.clone().requires_grad_(True)
    factory(**mode.kwargs)(leaf, target).backward()
    grad = leaf.grad
    assert grad is not None and torch.isfinite(grad).all()
    per_voxel = grad.abs().sum(dim=1)
    assert (per_voxel > 0).all(), f"{int((per_voxel == 0).sum())} of {per_voxel.numel()} voxels got no gradient"
    # Descending the gradient raises the score of the true class: its gradient entry is negative at every voxel.
    true_grad = torch.where(target > 0, grad, -grad) if mode.channels == 1 else grad.gather(1, labels)
    assert (true_grad < 0).all()


@pytest.mark.parametrize(("loss_name", "mode_name"), LOGIT_CASES)
def test_moderately_wrong_logits_give_a_descent_direction(loss_name: str, mode_name: str) -> None:
    """Every loss, region losses included, has a non-zero gradient that favours the true class on wrong logits."""
    factory, _ = LOSSES[loss_name]
    mode = MODES[mode_name]
    labels = torch.randint(0, NUM_CLASSES, (2, 1, *SPATIAL), generator=_generator(3))
    inputs, target = mode.make(labels, _wrong_scores(labels, 3.0))
    leaf = inputs.clone().requires_grad_(True)
    factory(**mode.kwargs)(leaf, target).backward()
    grad = leaf.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    if mode.channels == 1:
        toward_truth = torch.where(target > 0, grad, -grad).sum()
    else:
        onehot = F.one_hot(labels[:, 0], NUM_CLASSES).movedim(-1, 1).float()
        toward_truth = (grad * onehot).sum() - (grad * (1.0 - onehot)).sum()
    assert toward_truth < 0


@pytest.mark.parametrize("loss_name", REGION_PRESETS)
def test_region_losses_get_no_gradient_through_a_saturated_softmax(loss_name: str) -> None:
    """Documents a property of float32 softmax, not of the losses: ``softmax([100, -100, -100])`` is exactly one-hot.

    Region losses see only probabilities, so their gradient vanishes on confidently-wrong logits of +/-100; the
    compound losses keep a training signal through their cross-entropy term.
    """
    labels = torch.randint(0, NUM_CLASSES, (1, 1, *SPATIAL), generator=_generator(4))
    scores = _wrong_scores(labels, EXTREME).requires_grad_(True)
    get_loss(loss_name, softmax=True, to_onehot_y=True)(scores, labels).backward()
    assert scores.grad is not None and torch.equal(scores.grad, torch.zeros_like(scores))


CLIPPED_PRESETS = ("cross_entropy", "focal", "focal_tversky", "mixed_focal")
UNCLIPPED_PRESETS = ("dice", "tversky", "cosine_tversky", "combo")


@pytest.mark.parametrize("loss_name", CLIPPED_PRESETS + UNCLIPPED_PRESETS)
def test_probability_clip_on_confidently_wrong_probabilities(loss_name: str) -> None:
    """With probabilities of exactly 0 / 1, the authors' clip to [1e-7, 1 - 1e-7] zeroes the clipped terms' gradient.

    Cross entropy, focal, focal Tversky and therefore the Mixed Focal loss (FT + CF) get no gradient from a
    confidently-wrong probability map; plain Dice / Tversky / cosine Tversky are not clipped, and the Combo loss keeps
    the gradient of its Dice part. The same prediction as logits (``softmax=True``) keeps a gradient at every voxel.
    """
    labels = torch.randint(0, NUM_CLASSES, (1, 1, *SPATIAL), generator=_generator(5))
    wrong = F.one_hot((labels[:, 0] + 1) % NUM_CLASSES, NUM_CLASSES).movedim(-1, 1).float().requires_grad_(True)
    onehot = F.one_hot(labels[:, 0], NUM_CLASSES).movedim(-1, 1).float()
    value = get_loss(loss_name)(wrong, onehot)
    value.backward()
    assert torch.isfinite(value) and wrong.grad is not None and torch.isfinite(wrong.grad).all()
    if loss_name in CLIPPED_PRESETS:
        assert torch.equal(wrong.grad, torch.zeros_like(wrong.grad)), "the clip should stop the gradient at p in {0, 1}"
    else:
        assert wrong.grad.abs().sum() > 0
    if loss_name in PIXEL_PRESETS:
        logits = (EXTREME * (2.0 * wrong.detach() - 1.0)).requires_grad_(True)
        get_loss(loss_name, softmax=True)(logits, onehot).backward()
        assert logits.grad is not None and (logits.grad.abs().sum(dim=1) > 0).all()


@pytest.mark.parametrize(("loss_name", "mode_name"), CASES, ids=CASE_IDS)
def test_perfect_prediction_beats_a_random_one(loss_name: str, mode_name: str) -> None:
    """A perfect prediction (every class present) scores lower than a random one."""
    factory, _ = LOSSES[loss_name]
    mode = MODES[mode_name]
    labels = torch.randint(0, NUM_CLASSES, (2, 1, *SPATIAL), generator=_generator(6))
    labels[:, 0, 0, :NUM_CLASSES] = torch.arange(NUM_CLASSES)
    loss = factory(**mode.kwargs)
    loss.eval()  # running class weights: evaluate both predictions with the same (unset) weights
    perfect = loss(*mode.make(labels, _onehot_scores(labels, EXTREME)))
    random = loss(*mode.make(labels, torch.randn(2, NUM_CLASSES, *SPATIAL, generator=_generator(7))))
    assert torch.isfinite(perfect) and perfect < random


def _dice_overlap(prediction: torch.Tensor, labels: torch.Tensor, channels: int) -> float:
    """Mean hard Dice over classes (background included) of an argmax (or thresholded, one channel) prediction."""
    pred = (prediction[:, 0] > 0).long() if channels == 1 else prediction.argmax(dim=1)
    num = max(channels, 2)
    pred_onehot = F.one_hot(pred, num).movedim(-1, 1)
    label_onehot = F.one_hot(labels[:, 0], num).movedim(-1, 1)
    return float(compute_dice(pred_onehot, label_onehot, include_background=True, ignore_empty=False).mean())


OPTIMISATION_CASES = [(n, m) for n, m in CASES if n in LOSS_NAMES and m in ("softmax", "sigmoid1", "probabilities")]
OPTIMISATION_IDS = [f"{n}-{m}" for n, m in OPTIMISATION_CASES]


@pytest.mark.parametrize(
    ("loss_name", "mode_name"), OPTIMISATION_CASES, ids=[f"{n}-{m}" for n, m in OPTIMISATION_CASES]
)
def test_adam_steps_reduce_the_loss_and_improve_the_overlap(loss_name: str, mode_name: str) -> None:
    """30 Adam steps on free logits lower the loss and raise the hard Dice overlap with a random label map."""
    mode = MODES[mode_name]
    labels = torch.randint(0, NUM_CLASSES, (1, 1, 10, 10), generator=_generator(8))
    labels[:, 0, 0, :NUM_CLASSES] = torch.arange(NUM_CLASSES)
    target_labels = (labels > 0).long() if mode.channels == 1 else labels
    logits = (0.1 * torch.randn(1, mode.channels, 10, 10, generator=_generator(9))).requires_grad_(True)
    loss = get_loss(loss_name, **mode.kwargs)
    if mode.logits:
        target = target_labels.float()
    else:
        target = F.one_hot(target_labels[:, 0], mode.channels).movedim(-1, 1).float()
    optimiser = torch.optim.Adam([logits], lr=0.1)

    def step() -> float:
        optimiser.zero_grad()
        value = loss(logits if mode.logits else torch.softmax(logits, dim=1), target)
        value.backward()
        optimiser.step()
        return float(value)

    dice_before = _dice_overlap(logits.detach(), target_labels, mode.channels)
    values = [step() for _ in range(30)]
    dice_after = _dice_overlap(logits.detach(), target_labels, mode.channels)
    assert all(math.isfinite(v) for v in values)
    assert values[-1] < values[0] - 1e-3, f"loss {values[0]:.4f} -> {values[-1]:.4f}"
    assert dice_after > max(dice_before, 0.9), f"Dice {dice_before:.3f} -> {dice_after:.3f}"
