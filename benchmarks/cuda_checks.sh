#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (CI has no GPU), most telling first, within one time budget:
#   1. benchmarks/whole_loss.py on the GPU alone: the whole loss compiled against its statistics path and MONAI
#      (the host's cost per call, the open measurement of docs/performance.md "CUDA");
#   2. side by side: the CUDA tests of the losses, and a bundle trained, evaluated and run for inference on the GPU
#      with AMP plus torchrun with one NCCL process per GPU;
#   3. benchmarks/losses.py on the GPU alone (timings and peak memory at the paper's patches).
#
#   bash benchmarks/cuda_checks.sh [OUT_DIR]          # from the repository root; logs and tables go to OUT_DIR
#   BUDGET=400 WHOLE_TIMEOUT=0 BENCH_ARGS="--patches kits19 --losses mixed_focal dice" \
#       bash benchmarks/cuda_checks.sh OUT           # shorter
#
# Each step gets its own timeout (WHOLE_TIMEOUT, TESTS_TIMEOUT, BENCH_TIMEOUT; 0 skips the step) cut to what is left
# of BUDGET seconds (default 560, under a 600 s call), and is skipped when less than 30 s are left.
# Where the project is not installed (a bare GPU machine with torch), wheels of its other dependencies in .whl/ are
# installed to /tmp/site first and the repository is put on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/cuda_checks}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
budget="${BUDGET:-560}"

# seconds for a step: its own timeout ($1) cut to what is left of the budget; 0 when skipped
step_timeout() {
    local left=$((budget - SECONDS))
    if [ "$1" = "0" ] || [ "$left" -lt 30 ]; then echo 0; elif [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}

if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
fi
python3 -c "import torch, monai; print('torch', torch.__version__, '| monai', monai.__version__, '|', torch.cuda.get_device_name(0))"

# 1. the whole loss against its statistics path and MONAI, alone on the GPU
limit=$(step_timeout "${WHOLE_TIMEOUT:-120}")
if [ "$limit" != "0" ]; then
    timeout "$limit" python3 -m benchmarks.whole_loss --device cuda >"$out/whole_loss.log" 2>&1
    echo "whole loss on cuda: exit $? ($SECONDS s)"
    grep "^|" "$out/whole_loss.log" || tail -n 20 "$out/whole_loss.log"
fi

# 2. the CUDA tests of the losses and the GPU bundle runs, side by side (different processes, one GPU)
# (pytest-xdist where installed: each compiled configuration costs seconds of Triton compilation)
limit=$(step_timeout "${TESTS_TIMEOUT:-270}")
if [ "$limit" != "0" ]; then
    workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 6" || echo "")
    # shellcheck disable=SC2086
    timeout "$limit" python3 -m pytest -q -ra -p no:cacheprovider $workers tests/test_losses_fastpath.py -k cuda \
        >"$out/cuda_tests.log" 2>&1 &
    losses_pid=$!
    timeout "$limit" python3 -m pytest -q -ra -p no:cacheprovider \
        "tests/test_bundle_cli.py::test_kits19_train_evaluate_infer" \
        "tests/test_bundle_cli.py::test_brats20_with_a_target_loss" \
        "tests/test_bundle_cli.py::test_one_process_per_gpu_with_torchrun" >"$out/bundle_tests.log" 2>&1 &
    bundle_pid=$!
    wait "$losses_pid"; echo "CUDA loss tests: exit $? ($SECONDS s)"; tail -n 4 "$out/cuda_tests.log"
    wait "$bundle_pid"; echo "GPU bundle tests: exit $? ($SECONDS s)"; tail -n 4 "$out/bundle_tests.log"
fi

# 3. the losses benchmark, alone on the GPU
limit=$(step_timeout "${BENCH_TIMEOUT:-170}")
if [ "$limit" != "0" ]; then
    # shellcheck disable=SC2086
    timeout "$limit" python3 -m benchmarks.losses --devices cuda --repeats 20 --warmup 3 ${BENCH_ARGS:-} \
        --markdown "$out/losses_cuda.md" >"$out/losses_cuda.log" 2>&1
    echo "benchmark on cuda: exit $? ($SECONDS s)"
    cat "$out/losses_cuda.md" 2>/dev/null || tail -n 20 "$out/losses_cuda.log"
fi
