# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""Analytical gradients of every loss and preset against finite differences (``torch.autograd.gradcheck``, float64),
and finite values and gradients at the extremes (perfect and hopeless predictions, logits +-100, empty classes).

Inputs are small (at most 36 elements) so that the whole module runs in a few seconds.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from loss_reference import (
    COMPOUND,
    PRESETS,
    VARIANTS,
    labels_to_onehot,
    make_labels,
    make_logits,
    resolve,
    variant_id,
)

import monai_mixedfocal.losses as mfl


def build_loss(name: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    """The package loss of a class name or preset name."""
    return mfl.get_loss(name, **kwargs) if name in PRESETS else getattr(mfl, name)(**kwargs)


def is_compound(name: str) -> bool:
    return (PRESETS[name][0] if name in PRESETS else name) in COMPOUND


# mode -> (batch, channels, spatial, extra constructor kwargs, one-hot target?, reduction for region/pixel losses)
GRAD_SETUPS: dict[str, tuple[int, int, tuple[int, ...], dict[str, Any], bool, str]] = {
    "softmax-logits-2d": (1, 3, (3, 3), {"softmax": True, "to_onehot_y": True}, False, "mean"),
    "sigmoid-logits-3d": (2, 2, (2, 2, 2), {"sigmoid": True, "include_background": False, "batch": True}, True, "sum"),
    "probabilities-2d": (2, 2, (3, 3), {"to_onehot_y": True}, False, "none"),
}


CLASS_NAMES = sorted({name for name, _ in VARIANTS if name not in PRESETS})


@pytest.mark.parametrize("setup", sorted(GRAD_SETUPS))
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_gradcheck(variant: tuple[str, dict[str, Any]], setup: str) -> None:
    """Every configuration, ``fast_mode`` (a random projection of the Jacobian: one backward pass)."""
    check_gradient(*variant, setup, fast_mode=True)


@pytest.mark.parametrize("setup", sorted(GRAD_SETUPS))
@pytest.mark.parametrize("name", CLASS_NAMES)
def test_gradcheck_full_jacobian(name: str, setup: str) -> None:
    """Each class with its default arguments, the full Jacobian element by element."""
    check_gradient(name, {}, setup, fast_mode=False)


def check_gradient(name: str, loss_kwargs: dict[str, Any], setup: str, fast_mode: bool) -> None:
    """gradcheck of one loss configuration on one of the GRAD_SETUPS inputs."""
    n_batch, n_channels, spatial, act, onehot, reduction = GRAD_SETUPS[setup]
    if is_compound(name) and reduction == "none":
        reduction = "sum"
    n_kept = n_channels if act.get("include_background", True) else n_channels - 1
    loss = build_loss(name, {**resolve(loss_kwargs, n_kept), **act, "reduction": reduction})
    logits = make_logits(n_batch, n_channels, spatial, scale=1.5)
    labels = make_labels(n_batch, n_channels, spatial)
    target = labels_to_onehot(labels, n_channels) if onehot else labels
    # probabilities in [0.06, 0.94]: far from the clip at 1e-7, so the loss is smooth there
    x = logits if ("softmax" in act or "sigmoid" in act) else torch.softmax(logits, dim=1)
    x = x.detach().clone().requires_grad_(True)
    assert loss(x, target).dtype == torch.float64  # float64 in, float64 out (required by gradcheck)
    assert torch.autograd.gradcheck(
        lambda inp: loss(inp, target), (x,), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=fast_mode
    )


def _extreme_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, dict[str, Any]]]:
    """(id, input, index target, activation kwargs) at the edges of the domain; image 1 is all background."""
    labels = make_labels(2, 3, (2, 3))
    onehot = labels_to_onehot(labels, 3)
    wrong = labels_to_onehot((labels + 1) % 3, 3)
    return [
        ("perfect-logits-softmax", 200.0 * onehot - 100.0, labels, {"softmax": True}),
        ("hopeless-logits-softmax", 200.0 * wrong - 100.0, labels, {"softmax": True}),
        ("perfect-logits-sigmoid", 200.0 * onehot - 100.0, labels, {"sigmoid": True}),
        ("hopeless-logits-sigmoid", 200.0 * wrong - 100.0, labels, {"sigmoid": True}),
        ("perfect-probabilities", onehot, labels, {}),
        ("hopeless-probabilities", wrong, labels, {}),
        ("perfect-probabilities-no-background", onehot, labels, {"include_background": False}),
        ("perfect-logits-softmax-no-background", 200.0 * onehot - 100.0, labels, {"softmax": True, "batch": True}),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_finite_value_and_gradient_at_extremes(variant: tuple[str, dict[str, Any]], dtype: torch.dtype) -> None:
    name, loss_kwargs = variant
    failures = []
    for case, x0, labels, act in _extreme_cases():
        n_kept = 3 if act.get("include_background", True) else 2
        loss = build_loss(name, {**resolve(loss_kwargs, n_kept), **act, "to_onehot_y": True})
        x = x0.to(dtype).requires_grad_(True)
        value = loss(x, labels)
        value.backward()
        if not torch.isfinite(value).all():
            failures.append(f"{case}: value {value.detach()}")
        elif "combo" not in name.lower() and (value < 0).any():  # Combo subtracts the DSC by design: -1 at best
            failures.append(f"{case}: negative value {value.detach()}")
        elif x.grad is None or not torch.isfinite(x.grad).all():
            failures.append(f"{case}: non-finite gradient")
    assert not failures, f"{variant_id(variant)}:\n" + "\n".join(failures)
