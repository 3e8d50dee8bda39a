#!/usr/bin/env bash
# The wheels an air-gapped GPU node needs to run imbadv under its own torch (docs/gpu.md).
#
#   scripts/wheelhouse.sh     (make wheelhouse; WHEELHOUSE=dir, WANDB=1, EXTRA_WHEELS="pkg==1.0 ...")
#
# Run where pip reaches a package index. A CUDA PyTorch image already has torch, torchvision,
# lightning, numpy, scipy, pillow, matplotlib, safetensors, filelock, pyyaml, packaging, tqdm and
# requests; what it lacks is Hydra's config layer (hydra-core, omegaconf, antlr4), the joblib
# launcher of launcher=gpus, and torchattacks (imbadv.bench). All of them are pure Python
# (py3-none-any), so one folder serves Python 3.11 and 3.12 nodes on any platform. Each wheel is
# fetched with --no-deps and its dependencies are named here one by one: a wheel that came along
# as a dependency could replace a package of the node's (torchattacks pins requests~=2.25 and
# would downgrade the node's requests). The check at the end proves that every Requires-Dist of
# every wheel is met by a wheel in the folder or by the image. scripts/node_env.sh installs them
# on the node, likewise with --no-deps.
#
# WANDB=1 adds wandb with its dependencies (about 20 MB of platform wheels, for WANDB_PYTHONS on
# WANDB_PLATFORM): the GPU scripts run with logger=none, so the default set leaves it out.
# The folder's *.whl are replaced only once the new set has passed the check.
set -uo pipefail

WHEELHOUSE=${WHEELHOUSE:-.whl}
case $WHEELHOUSE in /*) ;; *) WHEELHOUSE=$PWD/$WHEELHOUSE ;; esac # the caller's folder, not ours
cd "$(dirname "$0")/.." || exit 1

PY=${PY:-.venv/bin/python}
WANDB=${WANDB:-0}
WANDB_PLATFORM=${WANDB_PLATFORM:-manylinux_2_28_x86_64} # aarch64 nodes (GH200): manylinux_2_28_aarch64
WANDB_PYTHONS=${WANDB_PYTHONS:-3.11 3.12}
EXTRA_WHEELS=${EXTRA_WHEELS:-} # more pure-Python wheels a node lacks (docs/gpu.md), also --no-deps

# The lower bounds are imbadv's (pyproject.toml); the upper ones those of the packages requiring
# them, which --no-deps does not apply (hydra-core 1.3 takes omegaconf < 2.4, antlr4 4.9).
PURE=(
  "hydra-core>=1.3.2,<1.4"
  "omegaconf>=2.3,<2.4"
  "hydra-joblib-launcher>=1.2"
  "joblib>=0.14"     # hydra-joblib-launcher's worker pool
  "cloudpickle>=3.0" # joblib's (it no longer bundles its own copy)
  "torchattacks>=3.5"
)
ANTLR="antlr4-python3-runtime==4.9.3" # hydra-core's parser runtime: PyPI has only its sdist, so build it
# What the check counts as the image's own (Requires-Dist names). torchattacks' requests~=2.25.1
# is met by the node's requests, whatever its version: torchattacks imports no requests itself.
IMAGE="torch torchvision lightning pytorch-lightning lightning-utilities torchmetrics numpy scipy
  pillow matplotlib safetensors filelock pyyaml packaging tqdm requests urllib3 idna certifi
  charset-normalizer typing-extensions fsspec jinja2 sympy networkx setuptools pandas pyarrow"

die() {
  echo "wheelhouse: $*" >&2
  exit 1
}
[ -x "$PY" ] || command -v "$PY" >/dev/null || die "no python at $PY (make install, or PY=...)"
stage=$(mktemp -d) || die "mktemp failed"
trap 'rm -rf "$stage"' EXIT
pip=("$PY" -m pip --disable-pip-version-check)

echo "wheelhouse: building $ANTLR (sdist only on PyPI)"
"${pip[@]}" wheel -q --no-deps -w "$stage" "$ANTLR" || die "could not build $ANTLR"

# Pure-Python wheels only, chosen as for the oldest Python served (3.11): a newer release that
# drops 3.11 is passed over for the last that supports it.
echo "wheelhouse: downloading ${PURE[*]} $EXTRA_WHEELS"
# shellcheck disable=SC2086  # EXTRA_WHEELS is a list of requirements
"${pip[@]}" download -q --no-deps --only-binary=:all: --implementation py --abi none \
  --platform any --python-version 3.11 -d "$stage" "${PURE[@]}" $EXTRA_WHEELS ||
  die "pip download failed (is a package index reachable?)"

if [ "$WANDB" = 1 ]; then
  for version in $WANDB_PYTHONS; do
    echo "wheelhouse: downloading wandb and its dependencies for Python $version on $WANDB_PLATFORM"
    # With its dependencies: the node installs only those it lacks (node_env.sh checks each).
    "${pip[@]}" download -q --only-binary=:all: --platform "$WANDB_PLATFORM" \
      --python-version "$version" -d "$stage" wandb || die "pip download wandb failed"
  done
fi

# Every wheel: Requires-Python admits 3.11 to 3.13, pure Python unless WANDB=1 brought it, and
# every dependency (markers evaluated for 3.11 and 3.12, no extras) met here or by the image.
"$PY" - "$stage" "$WANDB" "$IMAGE" <<'EOF' || die "the wheels above fail the check; the folder is unchanged"
import sys, zipfile
from email.parser import HeaderParser
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name, parse_wheel_filename
except ImportError:  # a python without packaging: pip's copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename

folder, wandb, image = Path(sys.argv[1]), sys.argv[2] == "1", set(sys.argv[3].split())
wheels = {}
for path in sorted(folder.glob("*.whl")):
    name, version, _, tags = parse_wheel_filename(path.name)
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        wheels[path.name] = (name, version, tags, HeaderParser().parsestr(z.read(meta).decode()))
have = {}
for name, version, _, _ in wheels.values():
    have.setdefault(name, []).append(version)
problems = []
for file, (name, version, tags, meta) in wheels.items():
    pure = any(t.interpreter == "py3" and t.abi == "none" and t.platform == "any" for t in tags)
    if not pure and not wandb:
        problems.append(f"{file}: not pure Python (py3-none-any)")
    spec = SpecifierSet(meta.get("Requires-Python") or "")
    if pure and not all(spec.contains(v) for v in ("3.11", "3.12", "3.13")):
        problems.append(f"{file}: Requires-Python {spec} leaves out 3.11, 3.12 or 3.13")
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        envs = [{"python_version": v, "python_full_version": v + ".0", "extra": ""} for v in ("3.11", "3.12")]
        if req.marker and not any(req.marker.evaluate(e) for e in envs):
            continue
        dep = canonicalize_name(req.name)
        if dep in image:
            continue
        if not any(req.specifier.contains(v, prereleases=True) for v in have.get(dep, [])):
            problems.append(f"{file}: requires {req}: neither in the folder nor the image's")
for p in problems:
    print("wheelhouse:", p, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF

mkdir -p "$WHEELHOUSE" || die "cannot create $WHEELHOUSE"
rm -f "$WHEELHOUSE"/*.whl # a set from before (WANDB=1, older releases) would mislead node_env.sh
mv "$stage"/*.whl "$WHEELHOUSE"/ || die "cannot write $WHEELHOUSE"

set -- "$WHEELHOUSE"/*.whl
n=$#
kb=$(cat "$WHEELHOUSE"/*.whl | wc -c | awk '{printf "%.0f", $1 / 1024}')
echo "wheelhouse: $WHEELHOUSE: $n wheels, $kb KB$([ "$WANDB" = 1 ] || echo ', pure Python for any Python >= 3.11')"
for f in "$WHEELHOUSE"/*.whl; do
  printf '  %6s KB  %s\n' "$(($(wc -c <"$f") / 1024))" "${f##*/}"
done
echo "wheelhouse: copy it with the checkout to the node, then there: source scripts/node_env.sh (docs/gpu.md)"
