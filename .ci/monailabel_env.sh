#!/usr/bin/env bash
# Copyright (c) monai-mixedfocal contributors
# Licensed under the Apache License, Version 2.0
#
# Builds the MONAI Label environment used by tests/test_monailabel.py (see docs/monailabel.md).
#
# Usage: bash .ci/monailabel_env.sh [VENV_DIR]        (default: $MONAILABEL_VENV, else .ci/venv-monailabel)
# Then:  export MONAILABEL_PYTHON=VENV_DIR/bin/python
#
# Contents: torch 2.14.1 + torchvision 0.29.1 (a matching pair; MONAI Label imports torchvision), monai 1.6.1,
# pytorch-ignite 0.5.5, monailabel 0.8.5 installed --no-deps plus the packages its server, its local datastore and its
# bundle tasks import (sam2, mlflow, openslide and lmdb are left out: the monaibundle app runs without them when started
# with `--conf sam2 false`), and this project in editable mode with its own dependencies.
# Idempotent: a stamp file records what was installed; a second run with the same script and repository path only
# checks that the imports still work.
set -euo pipefail
VENV="${1:-${MONAILABEL_VENV:-}}"
if [ -n "$VENV" ] && [ "${VENV#/}" = "$VENV" ]; then
    VENV="$(pwd)/$VENV"  # a relative folder is taken from where the script is called
fi
SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SCRIPT")/.."
REPO="$(pwd)"
VENV="${VENV:-$REPO/.ci/venv-monailabel}"
PY="$VENV/bin/python"
STAMP="$VENV/.monailabel_env.stamp"

log() { echo "[monailabel_env] $*"; }

start=$(date +%s)
stamp_value="$(sha256sum "$SCRIPT" setup.cfg | sha256sum | cut -c1-16) $REPO"
check_imports() {
    "$PY" - <<'PY'
import monai, monailabel, torch, torchvision
import monai_mixedfocal
from monailabel.app import app  # the HTTP server's FastAPI app (imports the web stack and the datastores)
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
print(f"[monailabel_env] torch {torch.__version__}, torchvision {torchvision.__version__}, monai {monai.__version__}, "
      f"monailabel {monailabel.__version__}, monai_mixedfocal {monai_mixedfocal.__version__}")
PY
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$stamp_value" ] && check_imports; then
    log "up to date: $VENV (checked in $(( $(date +%s) - start )) s)"
    log "export MONAILABEL_PYTHON=$(cd "$VENV" && pwd)/bin/python"
    exit 0
fi

if [ ! -x "$PY" ]; then
    log "creating the virtual environment $VENV"
    python3 -m venv "$VENV"
fi
pip_install() {
    log "pip install $*"
    "$PY" -m pip install --quiet --disable-pip-version-check "$@"
}

pip_install --upgrade pip
# A matching torch/torchvision pair (on these machines both come from local disk).
pip_install "torch==2.14.1" "torchvision==0.29.1"
pip_install "monai==1.6.1" "pytorch-ignite==0.5.5"
# monailabel's own requirements pull sam2 (source build), mlflow and pydicom-seg (which pins numpy<2): install it
# without dependencies, then exactly what it imports.
pip_install --no-deps "monailabel==0.8.5"
pip_install --no-deps "pydicom-seg==0.4.1"
# Versions tested together (monailabel 0.8.5 predates most of them; pydicom 3 breaks pydicom-seg 0.4.1).
pip_install \
    "fastapi==0.165.0" "uvicorn==0.54.0" "python-multipart==0.0.34" "httpx==0.28.1" "pydantic==2.14.3" \
    "pydantic-settings==2.16.3" "python-dotenv==1.2.4" "requests==2.34.2" "requests-toolbelt==1.0.0" \
    "cachetools==8.0.1" "schedule==1.2.2" "timeloop==1.0.2" "watchdog==7.1.0" "filelock==4.2.12" "psutil==7.2.2" \
    "passlib==1.7.4" "PyJWT==2.15.1" "bcrypt==5.0.0" "expiring-dict==1.1.2" "expiringdict==1.2.2" \
    "google-auth==2.62.2" "dicomweb-client==0.60.1" "pydicom==2.4.5" "SimpleITK==2.5.7" "girder-client==5.0.21" \
    "itk==5.4.7" "pynrrd==1.1.3" "scikit-image==0.26.0" "shapely==2.2.0" "einops==0.8.2" "nibabel==5.4.2" \
    "fire==0.7.1" "tensorboard==2.21.0" "PyYAML==6.0.3" "jsonschema==4.26.0" "scipy==1.17.1" "tqdm==4.70.1" \
    "pillow==13.0.0"
log "pip reports sam2, numpymaxflow, pynetdicom, ninja and scikit-learn as missing and pydicom-seg's numpy<2 pin:" \
    "expected, the monaibundle app does not import them"
# This project (editable) and whatever of its dependencies is not there yet.
pip_install -e "$REPO"

check_imports
echo "$stamp_value" > "$STAMP"
log "done in $(( $(date +%s) - start )) s; size $(du -sh "$VENV" | cut -f1)"
log "export MONAILABEL_PYTHON=$(cd "$VENV" && pwd)/bin/python"
