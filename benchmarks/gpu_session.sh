#!/usr/bin/env bash
# The one prepared run on a CUDA machine (make bench-gpu): correctness first (tests/gpu), then the GPU suite one
# section per process, each under its own time limit, so a section that breaks or overruns costs only itself and
# every finished section is already saved as gpu_<section>.json.
#
#   bash benchmarks/gpu_session.sh OUT [SECTION ...]      (default: inversion ops distill new, in order of value)
#
# Environment: PYTHON (python3), TEST_LIMIT_S (150), SECTION_LIMIT_S (150; LIMIT_<SECTION> for one section),
# SUITE_ARGS (e.g. --no-compile).
# Everything printed also goes to OUT/session.log; the tests' whole output to OUT/gpu_tests.log.
set -u
out=${1:?usage: gpu_session.sh OUT [SECTION ...]}
shift
sections=${*:-inversion ops distill new}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec > >(tee -a "$out/session.log") 2>&1

echo "== $(date -u '+%F %T') UTC, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 || true
$py -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__,
      "cuda", torch.version.cuda, torch.cuda.get_device_name())'
$py -m pip install --no-deps --no-build-isolation -q -e . >/dev/null 2>&1 \
  || echo "editable install failed: running from the source tree through PYTHONPATH"

echo "== tests/gpu (limit ${TEST_LIMIT_S:-150} s)"
start=$SECONDS
timeout "${TEST_LIMIT_S:-150}" $py -m pytest -q -m gpu tests/gpu -p no:cacheprovider -rfE --tb=short \
  >"$out/gpu_tests.log" 2>&1
echo "== tests/gpu: rc $? in $((SECONDS - start)) s (the whole log: gpu_tests.log)"
grep -E '^(FAILED|ERROR)|passed|failed' "$out/gpu_tests.log" | tail -30

for section in $sections; do
  limit_name="LIMIT_${section^^}"  # e.g. LIMIT_INVERSION=240 for that section alone
  limit=${!limit_name:-${SECTION_LIMIT_S:-150}}
  echo "== section $section (limit $limit s)"
  start=$SECONDS
  # shellcheck disable=SC2086
  timeout "$limit" $py benchmarks/gpu_suite.py --out "$out" --sections "$section" \
    ${SUITE_ARGS:-} 2>&1 | grep -v -E '^(\||#|$|torch |Sections)' | tail -40
  echo "== section $section: rc ${PIPESTATUS[0]} in $((SECONDS - start)) s"
done
[ -f "$out/ops_gpu.md" ] && cat "$out/ops_gpu.md"
