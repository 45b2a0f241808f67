#!/usr/bin/env bash
# One prepared pass over the GPU paths, for a machine with one CUDA device and nothing else:
#   1. the optimizer's oracle tests on CUDA (float32 and float64, TF32 left on by the user),
#   2. the step-overhead benchmark on the GPU,
#   3. wall-clock of L-SR1 vs Adam vs NAG, one run at a time,
#   4. Table 1's MNIST cells with as many seeds as the time allows (8 workers on one GPU).
# Everything it measures lands in $OUT (default ./outputs/gpu). Time limits keep the whole
# pass under BUDGET_S seconds; runs cut off by a limit are recorded as interrupted.
#
#   OUT=outputs/gpu MNIST_GZ=.gpu/mnist bash benchmarks/gpu_session.sh
# MNIST_GZ holds the four MNIST files gzipped (made from ../shared/data by `gzip -c`).
set -u
OUT=${OUT:-outputs/gpu}
MNIST_GZ=${MNIST_GZ:-.gpu/mnist}
DEVICE=${DEVICE:-cuda:0}
JOBS=${JOBS:-8}
BUDGET_S=${BUDGET_S:-470}
DRY=${DRY:-}            # set to --dry-run to check the plumbing without training
QUICK=${QUICK:-}        # set to 1 to skip the tests and the benchmark (plumbing checks)
start=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - start) )); }
mkdir -p "$OUT" /tmp/lsr1bench-data/MNIST/raw /tmp/lsr1bench-out
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-}:$PWD

for f in "$MNIST_GZ"/*.gz; do gunzip -c "$f" > /tmp/lsr1bench-data/MNIST/raw/"$(basename "$f" .gz)"; done
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  nproc
} 2>&1 | tee "$OUT/environment.txt"

if [ -z "$QUICK" ]; then
  echo "== oracle tests on CUDA (left: $(left) s)"
  timeout -k 5 120 python3 -m pytest -q -p no:cacheprovider \
    tests/test_obs_subproblem.py tests/test_lsr1_optimizer.py tests/test_cuda.py 2>&1 | tee "$OUT/pytest_cuda.txt" | tail -5
  echo "== step benchmark on $DEVICE (left: $(left) s)"
  timeout -k 5 90 python3 benchmarks/step_overhead.py --device "$DEVICE" --n 1e6 1e7 4e7 --m 2 5 10 --repeats 9 \
    2>&1 | tee "$OUT/step_overhead_cuda.txt"
fi

run_suite() {  # suite, jobs, seconds
  timeout -k 15 "$3" python3 -m lsr1bench.cli run "$1" $DRY --devices "$DEVICE" --jobs "$2" \
    --data-root /tmp/lsr1bench-data --output /tmp/lsr1bench-out 2>&1 | tail -25
}
echo "== wall-clock, one run at a time (left: $(left) s)"
run_suite suites/repro/gpu_wallclock_mnist.yaml 1 100 | tee "$OUT/wallclock_log.txt"
echo "== Table 1 MNIST, seeds 0-2 (left: $(left) s)"
run_suite suites/repro/table1_mnist.yaml "$JOBS" $(( $(left) - 60 > 30 ? $(left) - 60 : 30 )) | tee "$OUT/table1_log.txt"
if [ "$(left)" -gt 60 ]; then
  echo "== Table 1 MNIST, more seeds (left: $(left) s)"
  run_suite suites/repro/table1_mnist_more_seeds.yaml "$JOBS" $(( $(left) - 25 )) | tee -a "$OUT/table1_log.txt"
fi
echo "== report (left: $(left) s)"
for d in /tmp/lsr1bench-out/*/; do
  timeout 20 python3 -m lsr1bench.cli report "$d" --no-plots > "$OUT/report_$(basename "$d").txt" 2>&1
done
tar czf "$OUT/results.tgz" -C /tmp/lsr1bench-out . 2>/dev/null
echo "done in $(( $(date +%s) - start )) s"
