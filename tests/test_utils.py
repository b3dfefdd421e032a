# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""The shared helpers of ``monai_mixedfocal.utils`` (atomic writes are tested with the datalists that use them)."""

from __future__ import annotations

from monai_mixedfocal.utils import changed_entries


def test_changed_entries_names_each_change_in_order() -> None:
    recorded = {"fold": "0", "loss": "dice", "seed": None, "gone": 1}
    current = {"fold": "1", "loss": "dice", "seed": 0, "new": [1, 2]}
    assert changed_entries(recorded, current) == [
        "fold: '0' -> '1'",
        "seed: None -> 0",
        "gone: 1 -> (unset)",
        "new: (unset) -> [1, 2]",
    ]
    assert changed_entries(recorded, current, keys=("loss", "seed")) == ["seed: None -> 0"]
    assert changed_entries({"key": None}, {}) == ["key: None -> (unset)"]  # a recorded None is not a missing value
    assert changed_entries(recorded, dict(recorded)) == []


def test_changed_entries_shortens_long_values() -> None:
    (line,) = changed_entries({"root": "a" * 100}, {"root": "b"}, width=20)
    assert line == f"root: '{'a' * 16}... -> 'b'"  # 20 characters
