#!/usr/bin/env bash
# The GPU check, as one script (docs/performance.md reports what it printed).
#
#   bash benchmarks/gpu_check.sh OUT_DIR DATA_DIR
#
# Run from the repository root on a machine with a CUDA device, with pyrovae and its
# dependencies installed in python3's site-packages and `pyrovae` on the PATH (not through
# PYTHONPATH: the CLI tests start `python -m pyrovae.cli` without it, as a user would). On a
# machine without network, from wheels built beforehand (`pip wheel --no-deps -w .whl .` plus
# pyro-ppl, pyro-api, arviz and its missing dependencies):
#   python3 -m pip install --no-index --no-deps .whl/*.whl && bash benchmarks/gpu_check.sh out data It runs, each under its own time limit
# and each whatever the previous one did:
#   1. the CUDA tests (pytest -m cuda), from a copy of tests/ so that the installed package is
#      the one imported;
#   2. `pyrovae bench` on cuda: the suite's step in a CUDA graph, the same step eagerly, and the
#      hand-written PyTorch step, fp32 (full table) and bf16 (quick), plus the K=5000
#      log-likelihood of all 10,000 MNIST test images (untrained network) and IWAE memory;
#   3. `pyrovae fit` on MNIST for 10 epochs in fp32 and in bf16, each evaluated with K=5000
#      importance samples on the 10,000 test images (seconds, nats).
# Everything goes to OUT_DIR/log.txt; the bench JSONs and run summaries beside it.
set -u
OUT=${1:?usage: gpu_check.sh OUT_DIR DATA_DIR}
DATA=${2:?usage: gpu_check.sh OUT_DIR DATA_DIR}
mkdir -p "$OUT"
REPO=$(pwd)
LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1
say() { echo "$@" | tee -a "$LOG"; }
step() {  # step NAME SECONDS command...
    local name=$1 limit=$2; shift 2
    say "== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    say "== $name: rc=${PIPESTATUS[0]} in $((SECONDS - t0)) s"
}

say "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG"
python3 -c "import torch, pyro, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'pyro', pyro.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" 2>&1 | tee -a "$LOG"

TESTS=$(mktemp -d)
cp -r tests pyproject.toml "$TESTS"/
step pytest-cuda 150 bash -c "cd $TESTS && python3 -m pytest -q -m cuda -p no:cacheprovider -o addopts='' tests"

step bench-fp32 220 pyrovae bench --device cuda --blocks 3 --block-seconds 0.5 --memory --eval \
    --eval-images 10000 --eval-samples 5000 --data-dir "$DATA" --json "$OUT/bench-fp32.json"
step bench-bf16 60 pyrovae bench --device cuda --quick --precision bf16 --blocks 3 --block-seconds 0.5 \
    --json "$OUT/bench-bf16.json"

RUNS=$(mktemp -d)
for p in fp32 bf16; do
    step "fit-$p" 60 pyrovae fit --data mnist --data-dir "$DATA" --epochs 10 --device cuda --precision "$p" \
        --seed 0 --no-progress --out "$RUNS/$p"
    python3 -c "
import json, sys
m = [json.loads(l) for l in open('$RUNS/$p/metrics.jsonl')]
print('fit-$p', 'seconds/epoch', [round(e['seconds'], 2) for e in m], 'valid_elbo', round(m[-1]['valid_elbo'], 2))
" 2>&1 | tee -a "$LOG"
    step "evaluate-$p" 90 pyrovae evaluate "$RUNS/$p" --data-dir "$DATA" --num-samples 5000 --device cuda --json
done
cp "$RUNS"/fp32/run.json "$OUT/run-fp32.json" 2>/dev/null
say "== done"
