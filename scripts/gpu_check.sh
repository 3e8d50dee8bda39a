#!/usr/bin/env bash
# make gpu-check: every GPU code path of imbadv at toy size, one PASS|FAIL|SKIP line each, in a
# few minutes (python -m imbadv.bench.gpucheck; docs/gpu.md). What anyone with a GPU runs first.
#
#   scripts/gpu_check.sh [--device cpu] [--only PATH,...]      (PY=python3 on a GPU node)
#
# On an air-gapped node the missing pure-Python packages come from the wheelhouse
# (scripts/node_env.sh); the node's own torch is used. Logs and gpu_check.json go to $CHECK_DIR
# (default gpu-check/); with $OUT set (the device tool's) they are copied there too.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3}
CHECK_DIR=${CHECK_DIR:-gpu-check}
# shellcheck source=scripts/node_env.sh
source scripts/node_env.sh || exit 1

"$PY" -m imbadv.bench.gpucheck --out "$CHECK_DIR" "$@"
rc=$?
if [ -n "${OUT:-}" ] && [ -d "$CHECK_DIR" ]; then
  cp -f "$CHECK_DIR/gpu_check.json" "$OUT/" 2>/dev/null
  (cd "$CHECK_DIR" && tar czf "$OUT/gpu-check-logs.tar.gz" ./*.log bench.json 2>/dev/null)
fi
exit $rc
