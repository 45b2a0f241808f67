#!/usr/bin/env bash
# Train suites/ci.yaml as the gate's recorded runs and refresh the committed baseline.
#
#   scripts/make_gate_records.sh [WORK_DIR]        (default /tmp/gate-records)
#
# Writes outputs/baselines/ci.json (the CI baseline) and tests/data/gate/base.json from the
# "base" runs, and one baseline file per variant in tests/data/gate/, which
# tests/test_gate.py compares with base.json:
#
#   rerun            Adam's and NAG's cells again, same machine, same settings -> must pass
#   hashseed         Adam's and NAG's cells again with PYTHONHASHSEED=12345 (the base
#                    runs with Python's default, a random hash seed per process) -> must pass
#                    (to save time, both keep the base's L-SR1 runs: the slow ones)
#   no-simd          every cell again with ATEN_CPU_CAPABILITY=default: torch's CPU kernels
#                    without vector instructions, so sums are added in another order, as on
#                    another CPU -> must pass (a rounding-only change of every cell, L-SR1's too)
#   threads-adam-nag Adam's and NAG's cells again with --jobs 1: one worker with two torch
#                    threads instead of two workers with one -> must pass
#   threads          (only when asked for: GATE_VARIANTS=threads) --jobs 1: one worker
#                    with all the cores' torch threads instead of two workers with one
#                    each -> must pass. Under load, two-thread workers on two shared cores
#                    crawl (OpenMP waits for both threads), so the thread-count test reads
#                    two-epoch-threads{1,2}.json, recorded on the earlier two-epoch suite
#                    (tests/test_gate.py says why they need no refreshing)
#   adam-lr-x0.8     Adam's learning rate 0.001 -> 0.0008  (Adam cells retrained)
#   adam-lr-x0.5     Adam's learning rate 0.001 -> 0.0005
#   adam-lr-x0.25    Adam's learning rate 0.001 -> 0.00025
#   nag-diverges     NAG's learning rate 0.003 -> 100     (NAG cells retrained)
#   lsr1-radius-broken  L-SR1's trust-region radius hardly grows (x1.001, the least the
#                    registry accepts is above 1) and shrinks to a twentieth
#                    on a rejected step (radius_increase 1.001, radius_decrease 0.05)
#
# A regression variant copies the base runs and retrains only the cells it breaks, so it
# differs from the baseline by that one cause. Run it after an intended change to the
# training arithmetic (an optimizer, a model, the data pipeline, the torch version) or to
# suites/ci.yaml, then `python -m pytest tests/test_gate.py` and commit the JSON files. (The
# variants are compared with base.json, recorded with them, so without a rerun they stay
# valid tests of the gate; only outputs/baselines/ci.json must follow the code.)
# It trains 102 runs of three epochs (18 + 2 x 12 + 5 x 6 + 18 + 12): about 90 minutes,
# variant after variant (base 716 s, Adam x0.25 507 s, rerun 420 s, no-simd 1217 s,
# threads-adam-nag 694 s, ...), on two cores shared with other work (load average 5 to 12);
# GATE_VARIANTS="a b" trains only those.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/gate-records}
SUITE=suites/ci.yaml
RECORDS=tests/data/gate
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$WORK" "$RECORDS"
start=$SECONDS

train() {  # train NAME [ENV=VALUE ...] [-- extra run options]
    local name=$1; shift
    local envs=() extra=()
    while (($#)) && [[ $1 != -- ]]; do envs+=("$1"); shift; done
    (($#)) && shift && extra=("$@")
    rm -rf "${WORK:?}/$name"
    echo "== $name: $SUITE ${extra[*]} ${envs[*]}"
    env "${envs[@]}" python -m lsr1bench run "$SUITE" --output "$WORK/$name" --force "${extra[@]}" >"$WORK/$name.log" 2>&1
}

retrain() {  # retrain NAME OPTIMIZERS [ENV=VALUE ...] [-- extra run options]: the base's runs with OPTIMIZERS' cells retrained
    local name=$1 optimizers=$2; shift 2
    local envs=() extra=()
    while (($#)) && [[ $1 != -- ]]; do envs+=("$1"); shift; done
    (($#)) && shift && extra=("$@")
    rm -rf "${WORK:?}/$name"
    cp -r "$WORK/base" "$WORK/$name"
    python - "$SUITE" "$optimizers" >"$WORK/$name.yaml" <<'PY'
import sys

import yaml

suite = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
for grid in suite["grids"]:
    grid["optimizers"] = yaml.safe_load(sys.argv[2])
print(yaml.safe_dump(suite, sort_keys=False))
PY
    echo "== $name: $optimizers ${envs[*]} ${extra[*]}"
    env "${envs[@]}" python -m lsr1bench run "$WORK/$name.yaml" --output "$WORK/$name" --force "${extra[@]}" >"$WORK/$name.log" 2>&1
}

# GATE_VARIANTS="threads rerun" retrains only those (the others' runs under WORK_DIR are kept)
ALL="base adam-lr-x0.8 adam-lr-x0.5 adam-lr-x0.25 nag-diverges lsr1-radius-broken rerun hashseed no-simd threads-adam-nag"
for name in ${GATE_VARIANTS:-$ALL}; do
    case $name in
        base) train base ;;
        rerun) retrain rerun '[adam, nag]' ;;
        threads) train threads -- --jobs 1 ;;
        hashseed) retrain hashseed '[adam, nag]' PYTHONHASHSEED=12345 ;;
        no-simd) retrain no-simd '[lsr1, adam, nag]' ATEN_CPU_CAPABILITY=default ;;
        # OMP_WAIT_POLICY=PASSIVE: a waiting thread sleeps instead of spinning (same arithmetic)
        threads-adam-nag) retrain threads-adam-nag '[adam, nag]' OMP_WAIT_POLICY=PASSIVE -- --jobs 1 ;;
        adam-lr-x0.8) retrain "$name" '[{name: adam, params: {lr: 0.0008}}]' ;;
        adam-lr-x0.5) retrain "$name" '[{name: adam, params: {lr: 0.0005}}]' ;;
        adam-lr-x0.25) retrain "$name" '[{name: adam, params: {lr: 0.00025}}]' ;;
        nag-diverges) retrain "$name" '[{name: nag, params: {lr: 100.0}}]' ;;
        lsr1-radius-broken) retrain "$name" '[{name: lsr1, params: {radius_increase: 1.001, radius_decrease: 0.05}}]' ;;
        *) echo "unknown variant $name; known: $ALL" >&2; exit 2 ;;
    esac
done

python -m lsr1bench report "$WORK/base/ci" --no-plots --export-baseline outputs/baselines/ci.json >/dev/null
cp outputs/baselines/ci.json "$RECORDS/base.json"
EXPORT=${ALL#base }
if [[ " ${GATE_VARIANTS:-} " == *" threads "* ]]; then EXPORT+=" threads"; fi
for name in $EXPORT; do
    python -m lsr1bench report "$WORK/$name/ci" --no-plots --export-baseline "$RECORDS/$name.json" >/dev/null
done
echo "wrote outputs/baselines/ci.json and $RECORDS/*.json in $((SECONDS - start)) s"
