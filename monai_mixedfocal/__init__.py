# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
"""monai-mixedfocal: the Mixed Focal loss family (Yeung et al.) for MONAI.

Public entry points:

- :mod:`monai_mixedfocal.losses`: the losses, MONAI-style ``_Loss`` subclasses, and the name registry.
- :mod:`monai_mixedfocal.data`: KiTS19 / BraTS20 / MSD datalists, fold assignment, preprocessing, generated data.
- :mod:`monai_mixedfocal.metrics`: per-case confusion-matrix metrics (DSC, precision, recall, IoU).
- :mod:`monai_mixedfocal.stats`: confidence intervals, Wilcoxon tests with Holm-Bonferroni correction.
- ``python -m monai_mixedfocal``: the command line (``datalist``, ``synthesize``, ``stats``, ``study``, ``bundles``).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
