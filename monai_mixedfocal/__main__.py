# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""``python -m monai_mixedfocal``: see :mod:`monai_mixedfocal.cli`."""

from __future__ import annotations

from monai_mixedfocal.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
