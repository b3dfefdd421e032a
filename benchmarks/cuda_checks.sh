#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (CI has no GPU): the CUDA tests of the losses, a bundle trained,
# evaluated and run for inference on the GPU with AMP, torchrun with one NCCL process per GPU, then the losses
# benchmark on the GPU alone (timings) and benchmarks/whole_loss.py (the whole loss compiled against its statistics).
#
#   bash benchmarks/cuda_checks.sh [OUT_DIR]          # from the repository root; logs and tables go to OUT_DIR
#   TESTS_TIMEOUT=200 BENCH_TIMEOUT=100 BENCH_ARGS="--patches kits19 --losses mixed_focal dice" \
#       WHOLE_TIMEOUT=0 bash benchmarks/cuda_checks.sh OUT      # shorter
#
# Where the project is not installed (a bare GPU machine with torch), wheels of its other dependencies in .whl/ are
# installed to /tmp/site first and the repository is put on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/cuda_checks}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
fi
python3 -c "import torch, monai; print('torch', torch.__version__, '| monai', monai.__version__, '|', torch.cuda.get_device_name(0))"
started=$SECONDS

# the CUDA tests of the losses and the GPU bundle runs, side by side (different processes, one GPU)
# (pytest-xdist where installed: each compiled configuration costs seconds of Triton compilation)
workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 6" || echo "")
# shellcheck disable=SC2086
timeout "${TESTS_TIMEOUT:-270}" python3 -m pytest -q -ra -p no:cacheprovider $workers tests/test_losses_fastpath.py -k cuda \
    >"$out/cuda_tests.log" 2>&1 &
losses_pid=$!
timeout "${TESTS_TIMEOUT:-270}" python3 -m pytest -q -ra -p no:cacheprovider \
    "tests/test_bundle_cli.py::test_kits19_train_evaluate_infer" \
    "tests/test_bundle_cli.py::test_brats20_with_a_target_loss" \
    "tests/test_bundle_cli.py::test_one_process_per_gpu_with_torchrun" >"$out/bundle_tests.log" 2>&1 &
bundle_pid=$!
wait "$losses_pid"; echo "CUDA loss tests: exit $? ($((SECONDS - started)) s)"; tail -n 4 "$out/cuda_tests.log"
wait "$bundle_pid"; echo "GPU bundle tests: exit $? ($((SECONDS - started)) s)"; tail -n 4 "$out/bundle_tests.log"

# timings on the GPU, alone on the machine
# shellcheck disable=SC2086
timeout "${BENCH_TIMEOUT:-200}" python3 -m benchmarks.losses --devices cuda --repeats 20 --warmup 3 ${BENCH_ARGS:-} \
    --markdown "$out/losses_cuda.md" >"$out/losses_cuda.log" 2>&1
echo "benchmark on cuda: exit $? ($((SECONDS - started)) s)"
cat "$out/losses_cuda.md" 2>/dev/null

# benchmarks/whole_loss.py: the whole loss compiled against the statistics path and MONAI (WHOLE_TIMEOUT=0 skips it)
if [ "${WHOLE_TIMEOUT:-150}" != "0" ]; then
    timeout "${WHOLE_TIMEOUT:-150}" python3 -m benchmarks.whole_loss --device cuda >"$out/whole_loss.log" 2>&1
    echo "whole loss on cuda: exit $? ($((SECONDS - started)) s)"
    grep "^|" "$out/whole_loss.log"
fi
