#!/usr/bin/env bash
# One GPU lease, one call: the reference runs of docs/results.md at GPU scale.
#
#   scripts/gpu_reference.sh                 (make gpu-reference; DATA=.../cifar10-jpeg.tar.gz)
#
# Within BUDGET seconds (default 720: 12 minutes) it runs the paper preset seed by seed with its
# matched control (width-1 VGG, 5,000 / 1,000 images, class 0..9 x balanced/under/over/matched),
# then experiment=longtail seeds (ResNet-18, CIFAR-10-LT IR 50, PGD-AT, AT-BSL's recipe) while at
# least LONGTAIL_MIN seconds are left. Each chunk (one seed of one study) is a sweep of its own.
# Then the GPU sections of $PAGE are regenerated from the complete archives in $DEST, and a short
# table is printed last.
#
# Estimate. Before a chunk starts one line gives its jobs, the distinct models they need (counted
# from their configs) and an estimate: models x seconds per model, the seconds being this study's
# earlier chunks in $WORK/timings.tsv (all their seconds over all the models they trained), or,
# before any, the targets of docs/bench.md (PAPER_MODEL_S=6: 21 models in 2 minutes;
# LONGTAIL_MODEL_S=240: 4 minutes a model). A chunk estimated longer than the time it gets still
# starts, and says so: what finishes is kept.
#
# Partial chunks. A chunk whose jobs all finish is archived as $DEST/gpu-STUDY-seedN.tar.gz. One
# that the budget stops (timeout sends SIGINT, SIGKILL 30 s later) or that has failed jobs is
# archived too, as gpu-STUDY-seedN.partial.tar.gz: its manifest says "partial": true and names
# every job without results, started or not, in "pending" (a report of it lists them as
# missing). Sweeps stop RESERVE seconds (default 30) before the budget, so that this archive, the
# sections and send_back fit inside it. The page's GPU sections read complete archives only: a
# partial archive is not a seed yet (the summary at the end names it).
#
# Resuming. The same command continues: a chunk with a complete archive is skipped; a chunk with
# a partial one runs again, its archived results first written back into the sweep folder, then
# only the jobs without results, as few sweeps as their grid allows, into the same folder (so the
# complete archive, which then replaces the partial one, holds the first results byte for byte
# and the first multirun.yaml). What carries over is the results, not the models: the store
# keeps models on this machine only, and a bare machine retrains the ones the missing jobs need
# (a balanced control that finished jobs used too). Models cannot come back: a width-1 VGG is
# ~16 MB of safetensors (22 models a paper seed), a ResNet-18 ~45 MB, while the device tool's
# $OUT returns at most 8 files of 16 MiB, 64 MiB in all; a job's results are a few kB.
#
# Sending back. With $OUT set (the device tool's), after every chunk: the archives written in
# this call (complete or partial) into $OUT/$DEST/, the timings as $OUT/timings.tsv and the page
# with its GPU figures as one $OUT/gpu-page.tar.gz (paths relative to the page's folder): two
# files besides the archives, so a lease's archives fit the tool's 8. Before the next lease, copy
# $OUT/$DEST/* into $DEST (partial archives too) and $OUT/timings.tsv into $WORK/.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python}
BUDGET=${BUDGET:-720}
RESERVE=${RESERVE:-30}                        # seconds kept for archiving, sections, send_back
DEST=${DEST:-docs/results}
PAGE=${PAGE:-docs/results.md}
WORK=${WORK:-gpu-reference}                   # sweep folders and the store (not in git)
DATA=${DATA:-}                                # a CIFAR-10 copy (folder/tar.gz); empty: the download
PAPER=${PAPER:-experiment=paper}
PAPER_GRID=${PAPER_GRID:-class=0..9 imbalance=balanced,under,over,matched}
PAPER_SEEDS=${PAPER_SEEDS-0 1 2}          # empty: none
PAPER_MIN=${PAPER_MIN:-120}                   # seconds a paper seed needs at least
PAPER_MODEL_S=${PAPER_MODEL_S:-6}             # estimate per model before any timings
LONGTAIL=${LONGTAIL:-experiment=longtail}
LONGTAIL_GRID=${LONGTAIL_GRID:-class=0..9 adversarial=pgd_at objective=ce,balanced_softmax}
LONGTAIL_SEEDS=${LONGTAIL_SEEDS-0 1 2 3 4}  # empty: none
LONGTAIL_MIN=${LONGTAIL_MIN:-240}             # the <= 4 minutes per model target
LONGTAIL_MODEL_S=${LONGTAIL_MODEL_S:-240}
LAUNCH=${LAUNCH:-launcher=gpus trainer.group=auto}
EXTRA=${EXTRA:-}
# shellcheck source=scripts/node_env.sh
source scripts/node_env.sh || exit 1  # an air-gapped node: its missing packages from .whl/

start=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - start))); }
sweep_time() { echo $(($(left) - RESERVE)); }  # what a sweep started now may take
data_args=()
[ -n "$DATA" ] && data_args=(dataset=folder "dataset.root=$DATA")
mkdir -p "$DEST" "$WORK"
timings="$WORK/timings.tsv"
stamp="$WORK/.started"  # archives newer than this were written by this call
touch "$stamp"
PLANNER='import sys; from imbadv.status.chunks import chunk_main; sys.exit(chunk_main(sys.argv[1:]))'

send_back() {  # what finished, to the device tool's $OUT (a no-op elsewhere)
  [ -n "${OUT:-}" ] || return 0
  mkdir -p "$OUT/$DEST"
  rm -f "$OUT/$DEST"/gpu-*.partial.tar.gz  # one sent earlier in this call may be complete now
  find "$DEST" -maxdepth 1 -name 'gpu-*.tar.gz' -newer "$stamp" -exec cp -f {} "$OUT/$DEST/" \;
  cp -f "$timings" "$OUT/" 2>/dev/null
  [ -f "$PAGE" ] || return 0
  local dir=${PAGE%/*} figures=() f
  [ "$dir" = "$PAGE" ] && dir=.
  local folder=${PAGE%.md}
  for f in "$folder"/gpu-*.png; do
    [ -f "$f" ] && figures+=("${folder##*/}/${f##*/}")
  done
  tar -czf "$OUT/gpu-page.tar.gz" -C "$dir" "${PAGE##*/}" "${figures[@]}" 2>/dev/null
  return 0
}

trained() {  # models the store has trained so far (its work log)
  local log="$WORK/store/trainings.jsonl"
  if [ -f "$log" ]; then wc -l <"$log"; else echo 0; fi
}

per_model() {  # study: seconds per model and how many earlier chunks say so (nothing: none)
  [ -f "$timings" ] || return 0
  awk -F'\t' -v s="$1" '$1 == s && $6 > 0 { t += $3; m += $6; n++ }
    END { if (n) printf "%.1f %d\n", t / m, n }' "$timings"
}

estimate() {  # study models target_per_model: prints seconds, then where the figure comes from
  local rate n
  read -r rate n <<<"$(per_model "$1")"
  if [ -n "${rate:-}" ]; then
    echo "$(awk -v r="$rate" -v m="$2" 'BEGIN { printf "%d", r * m + 0.5 }')" \
      "($rate s per model from $n earlier $1 chunk(s) in $timings)"
  else
    echo "$(($3 * $2))" "($3 s per model: the target, no $1 timings in $timings yet)"
  fi
}

run_sweeps() {  # sweep blocks...: each block's overrides (shell-quoted) as one sweep; the exit
  local sweep=$1 rc=0 b block
  shift
  # Each sweep rewrites multirun.yaml with its own grid; the first one's describes the chunk
  # (which jobs the archive must name as missing), so it is put back after each.
  [ -f "$sweep/multirun.yaml" ] && cp -f "$sweep/multirun.yaml" "$sweep.multirun.yaml"
  for b in "$@"; do
    [ "$(sweep_time)" -ge 1 ] || { rc=124 && break; }
    eval "block=($b)"
    timeout --signal=INT --kill-after=30 "$(sweep_time)" "$PY" -m imbadv.run -m "${block[@]}"
    rc=$?
    [ -f "$sweep.multirun.yaml" ] && cp -f "$sweep.multirun.yaml" "$sweep/multirun.yaml"
    [ "$rc" -eq 0 ] || break
  done
  return "$rc"
}

chunk() {  # study seed min_seconds grid preset seconds_per_model: one seed of one study
  local study=$1 seed=$2 need=$3 grid=$4 preset=$5 rate=$6
  local name="gpu-$study-seed$seed" sweep="$WORK/$study-seed$seed"
  local archive="$DEST/$name.tar.gz" partial="$DEST/$name.partial.tar.gz"
  if [ -f "$archive" ]; then
    rm -f "$partial"  # an older partial one, copied back after another lease completed it
    echo "gpu_reference: $study seed $seed: done before ($archive)"
    return 0
  fi
  if [ "$(left)" -lt "$need" ]; then
    echo "gpu_reference: $study seed $seed: not started, $(left) s left (needs $need)"
    return 1
  fi
  # shellcheck disable=SC2206  # the grids and presets are lists of overrides
  local args=($preset $grid "seed=$seed" "${data_args[@]}" logger=none progress=quiet $LAUNCH
    "paths.store_dir=$WORK/store" "hydra.sweep.dir=$sweep" $EXTRA)
  local plan planned=? done=0 models=? restored=0 blocks
  if plan=$("$PY" -c "$PLANNER" "$sweep" "$([ -f "$partial" ] && echo "$partial")" "${args[@]}"); then
    read -r planned done models _ restored <<<"${plan%%$'\n'*}"
    mapfile -t blocks < <(tail -n +2 <<<"$plan")
  else  # the planner said why on stderr; imbadv.run refuses a bad config the same way
    blocks=("$(printf '%q ' "${args[@]}")")
  fi
  local est=? src="(no plan: the planner's error is above)" line
  [ "$models" = "?" ] || read -r est src <<<"$(estimate "$study" "$models" "$rate")"
  line="gpu_reference: $study seed $seed: $planned jobs ($done done before"
  [ "$restored" -gt 0 ] && line+=", restored from ${partial##*/}"
  line+="), ${#blocks[@]} sweep(s), $models models to train, estimate $est s $src;"
  line+=" $(sweep_time) s left for it"
  [ "$est" != "?" ] && [ "$est" -gt "$(sweep_time)" ] &&
    line+=": longer, started anyway (what finishes is archived as ${partial##*/})"
  echo "$line"
  local t0 rc before
  t0=$(date +%s)
  before=$(trained)
  run_sweeps "$sweep" "${blocks[@]}"
  rc=$?
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$study" "$seed" "$(($(date +%s) - t0))" "$rc" \
    "$([ "$planned" = "?" ] && echo "?" || echo $((planned - done)))" "$(($(trained) - before))" \
    >>"$timings"
  archive_chunk "$study" "$seed" "$sweep" "$rc" "$archive" "$partial"
}

archive_chunk() {  # study seed sweep exit archive partial: complete, partial, or nothing finished
  local study=$1 seed=$2 sweep=$3 rc=$4 archive=$5 partial=$6
  local made="$WORK/${archive##*/}"
  if ! "$PY" -m imbadv.report "$sweep" --archive "$made"; then
    echo "gpu_reference: $study seed $seed: ended with exit $rc before any job finished:" \
      "nothing archived; the same command reruns it"
    return 1
  fi
  # complete: every job the chunk's command describes has results (the manifest says which not)
  local manifest
  manifest=$(tar -xzOf "$made" manifest.json)
  if [ "$rc" -eq 0 ] && [[ $manifest != *'"partial": true'* ]]; then
    mv -f "$made" "$archive" && rm -f "$partial"
    send_back
    return 0
  fi
  mv -f "$made" "$partial"
  echo "gpu_reference: $study seed $seed: ended with exit $rc; finished jobs archived in" \
    "$partial (its manifest's pending names the rest); the same command runs only those"
  send_back
  return 1
}

section() {  # study attack-args...: regenerate the study's GPU section from its complete archives
  local study=$1 archives=() a
  shift
  for a in "$DEST"/gpu-"$study"-seed*.tar.gz; do
    [[ -f $a && $a != *.partial.tar.gz ]] && archives+=("$a")
  done
  [ "${#archives[@]}" -gt 0 ] || return 0
  "$PY" -m imbadv.report "${archives[@]}" "$@" --out "$WORK/report-$study" \
    --section "gpu-$study" --results-page "$PAGE"
}

for seed in $PAPER_SEEDS; do
  chunk paper "$seed" "$PAPER_MIN" "$PAPER_GRID" "$PAPER" "$PAPER_MODEL_S" || break
done
for seed in $LONGTAIL_SEEDS; do
  chunk longtail "$seed" "$LONGTAIL_MIN" "$LONGTAIL_GRID" "$LONGTAIL" "$LONGTAIL_MODEL_S" || break
done
section paper
section longtail --attack pgd
send_back

echo
echo "gpu_reference: $(($(date +%s) - start)) s of $BUDGET; chunks (study, seed, seconds, exit," \
  "jobs run, models trained):"
[ -f "$timings" ] && sed 's/^/  /' "$timings"
for study in paper longtail; do
  n=0
  partials=()
  for a in "$DEST"/gpu-"$study"-seed*.tar.gz; do
    [ -f "$a" ] || continue
    if [[ $a == *.partial.tar.gz ]]; then partials+=("${a##*/}"); else n=$((n + 1)); fi
  done
  echo "  $study: $n seed(s) archived in $DEST"
  [ "${#partials[@]}" -gt 0 ] &&
    echo "  $study: partial, not in the page, continued by the same command: ${partials[*]}"
  report="$WORK/report-$study/report.md"
  [ -f "$report" ] && awk '/^## The paper.s findings/{on=1} on && /^\|/' "$report" | head -20
done
exit 0  # what ran is archived (partial chunks too); what did not is said above
