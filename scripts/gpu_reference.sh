#!/usr/bin/env bash
# One GPU lease, one call: the reference runs of docs/results.md at GPU scale (issue 21).
#
#   scripts/gpu_reference.sh                 (make gpu-reference; DATA=.../cifar10-jpeg.tar.gz)
#
# Within BUDGET seconds (default 720: 12 minutes) it runs the paper preset seed by seed with its
# matched control (width-1 VGG, 5,000 / 1,000 images, class 0..9 x balanced/under/over/matched),
# then experiment=longtail seeds (ResNet-18, CIFAR-10-LT IR 50, PGD-AT, AT-BSL's recipe) while at
# least LONGTAIL_MIN seconds are left. Each chunk (one seed of one study) is a sweep of its own,
# archived into $DEST when it completes; a chunk whose archive exists is skipped, so a lease cut
# short loses only the chunk it was in, and the next lease (the same command) continues where
# this one stopped. Then the GPU sections of $PAGE are regenerated from every archive there, and a
# short table is printed last. With $OUT set (the device tool's), archives, page, figures and
# timings are copied there after every chunk: what finished comes back even if the lease ends.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python}
BUDGET=${BUDGET:-720}
DEST=${DEST:-docs/results}
PAGE=${PAGE:-docs/results.md}
WORK=${WORK:-gpu-reference}                   # sweep folders and the store (not in git)
DATA=${DATA:-}                                # a CIFAR-10 copy (folder/tar.gz); empty: the download
PAPER=${PAPER:-experiment=paper}
PAPER_GRID=${PAPER_GRID:-class=0..9 imbalance=balanced,under,over,matched}
PAPER_SEEDS=${PAPER_SEEDS-0 1 2}          # empty: none
PAPER_MIN=${PAPER_MIN:-120}                   # seconds a paper seed needs at least
LONGTAIL=${LONGTAIL:-experiment=longtail}
LONGTAIL_GRID=${LONGTAIL_GRID:-class=0..9 adversarial=pgd_at objective=ce,balanced_softmax}
LONGTAIL_SEEDS=${LONGTAIL_SEEDS-0 1 2 3 4}  # empty: none
LONGTAIL_MIN=${LONGTAIL_MIN:-240}             # the <= 4 minutes per model target
LAUNCH=${LAUNCH:-launcher=gpus trainer.group=auto}
EXTRA=${EXTRA:-}

start=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - start))); }
data_args=()
[ -n "$DATA" ] && data_args=(dataset=folder "dataset.root=$DATA")
mkdir -p "$DEST" "$WORK"
timings="$WORK/timings.tsv"

send_back() {  # what finished, to the device tool's $OUT (a no-op elsewhere)
  [ -n "${OUT:-}" ] || return 0
  mkdir -p "$OUT/$DEST"
  cp -f "$DEST"/gpu-*.tar.gz "$OUT/$DEST/" 2>/dev/null
  cp -f "$timings" "$OUT/" 2>/dev/null
  [ -f "$PAGE" ] && cp -f "$PAGE" "$OUT/$DEST.md" 2>/dev/null
  cp -rf "${PAGE%.md}"/gpu-* "$OUT/$DEST/" 2>/dev/null
  return 0
}

chunk() {  # study seed min_seconds grid: one seed of one study, archived when complete
  local study=$1 seed=$2 need=$3 grid=$4 preset=$5
  local archive="$DEST/gpu-$study-seed$seed.tar.gz" sweep="$WORK/$study-seed$seed"
  if [ -f "$archive" ]; then
    echo "gpu_reference: $study seed $seed: done before ($archive)"
    return 0
  fi
  if [ "$(left)" -lt "$need" ]; then
    echo "gpu_reference: $study seed $seed: not started, $(left) s left (needs $need)"
    return 1
  fi
  local t0 rc
  t0=$(date +%s)
  # shellcheck disable=SC2086  # the grids and presets are lists of overrides
  timeout --signal=INT --kill-after=30 "$(left)" "$PY" -m imbadv.run -m $preset $grid \
    "seed=$seed" "${data_args[@]}" logger=none progress=quiet $LAUNCH \
    "paths.store_dir=$WORK/store" "hydra.sweep.dir=$sweep" $EXTRA
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$study" "$seed" "$(($(date +%s) - t0))" "$rc" >>"$timings"
  if [ "$rc" -ne 0 ]; then
    echo "gpu_reference: $study seed $seed: ended with exit $rc, not archived; the same command" \
      "reruns it (models that finished are in $WORK/store on this machine)"
    return 1
  fi
  "$PY" -m imbadv.report "$sweep" --archive "$archive" || return 1
  send_back
}

section() {  # study attack-args...: regenerate the study's GPU section from its archives
  local study=$1
  shift
  local archives=("$DEST"/gpu-"$study"-seed*.tar.gz)
  [ -f "${archives[0]}" ] || return 0
  "$PY" -m imbadv.report "${archives[@]}" "$@" --out "$WORK/report-$study" \
    --section "gpu-$study" --results-page "$PAGE"
}

for seed in $PAPER_SEEDS; do
  chunk paper "$seed" "$PAPER_MIN" "$PAPER_GRID" "$PAPER" || break
done
for seed in $LONGTAIL_SEEDS; do
  chunk longtail "$seed" "$LONGTAIL_MIN" "$LONGTAIL_GRID" "$LONGTAIL" || break
done
section paper
section longtail --attack pgd
send_back

echo
echo "gpu_reference: $(($(date +%s) - start)) s of $BUDGET; chunks (study, seed, seconds, exit):"
[ -f "$timings" ] && sed 's/^/  /' "$timings"
for study in paper longtail; do
  n=$(ls "$DEST"/gpu-"$study"-seed*.tar.gz 2>/dev/null | wc -l)
  echo "  $study: $n seed(s) archived in $DEST"
  report="$WORK/report-$study/report.md"
  [ -f "$report" ] && awk '/^## The paper.s findings/{on=1} on && /^\|/' "$report" | head -20
done
exit 0  # what ran is archived; what did not is said above (and reruns with the same command)
