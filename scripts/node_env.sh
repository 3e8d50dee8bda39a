# shellcheck shell=bash
# Source it (bash) on a GPU node before running imbadv there:   source scripts/node_env.sh
#
# An air-gapped node has no package index, so neither `pip install -e .` (it fetches the
# dependencies) nor the dev venv's pins (make install) apply: imbadv runs under the node's own
# Python, torch and lightning. This checks that the node's python imports what imbadv needs. If
# something is missing, the wheelhouse (`make wheelhouse` where pip reaches an index, copied here
# with the checkout) is installed into a private folder, NODE_SITE, with --no-deps and from the
# wheelhouse alone: each of its distributions that the node lacks or has at another version (a
# node's antlr4 4.13 breaks hydra 1.3), except the image's own packages, which it may only add
# where absent. So the node's torch, lightning, numpy and requests stay the ones in use. Then
# PYTHONPATH gets NODE_SITE and the checkout itself (imbadv runs from the checkout, installed
# nowhere). One line says what happened; non-zero, PYTHONPATH left as it was, when something
# stays missing. Where everything imports already (a dev venv) it only puts the checkout on
# PYTHONPATH, so scripts may source it anywhere.
#
#   PY            the node's python (default python3)
#   WHEELHOUSE    the wheel folder (default <checkout>/.whl)
#   NODE_SITE     the private folder (default <checkout>/.node-site/py3XX: one per Python
#                 version, as WANDB=1's platform wheels are built per version)
#   NODE_MODULES  more modules to require (from wheels added to the wheelhouse: docs/gpu.md)
#
# Sourced into the caller's shell: everything lives in one function with local variables, and
# the caller's errexit is turned off while it runs and put back after (a failed check must reach
# the message, not end the caller's shell half way).

_imbadv_node_env() {
  local root py tag version wheelhouse site pp missing names log installed f wheels=0
  # From the wheelhouse when missing; imported, as they are cheap to import.
  local wheel_modules="hydra omegaconf antlr4 hydra_plugins.hydra_joblib_launcher joblib cloudpickle"
  # Looked up, not imported: torch takes seconds to import (torchattacks imports it).
  local found_modules="torchattacks"
  # The image's own (any CUDA PyTorch image has them; the wheelhouse only if added to it): looked up.
  local image_modules="torch torchvision lightning numpy scipy PIL matplotlib safetensors filelock
    yaml packaging tqdm"
  # Imports the modules before --find, looks up the rest (--image: the image's own, named apart);
  # prints the missing ones, nothing when none is.
  local check='import importlib, importlib.util, sys
lacks, own, mode = [], [], "import"
for name in sys.argv[1:]:
    if name in ("--find", "--image"):
        mode = name
        continue
    try:
        if mode == "import":
            importlib.import_module(name)
        elif importlib.util.find_spec(name) is None:
            raise ImportError(name)
    except Exception:
        (own if mode == "--image" else lacks).append(name)
print(" and ".join(filter(None, [" ".join(lacks), own and "the image packages " + " ".join(own)])))'
  # The wheelhouse's distributions this python lacks outside NODE_SITE, or has at another version:
  # the wheelhouse's set was checked as a whole, and a node's own antlr4 4.13 or cloudpickle 2
  # breaks hydra 1.3 or joblib 1.6. The image's own packages (WANDB=1 brings requests, pyyaml...)
  # only where absent: never a second torch, numpy or requests in front of the node's.
  local pick='import importlib.metadata as md, os, re, sys
from pathlib import Path
canon = lambda n: re.sub(r"[-_.]+", "-", n or "").lower()
site, image = os.path.realpath(sys.argv[2]), set(sys.argv[3].split())
path = [p for p in sys.path if os.path.realpath(p or ".") != site]
have = {}
for d in md.distributions(path=path):
    have.setdefault(canon(d.metadata["Name"]), d.version)  # the first on the path is the one used
wheels = {canon(f.name.split("-")[0]): f.name.split("-")[1] for f in Path(sys.argv[1]).glob("*.whl")}
print(" ".join(sorted(n for n, v in wheels.items() if n not in have or (n not in image and have[n] != v))))'
  local image_dists="torch torchvision lightning pytorch-lightning lightning-utilities torchmetrics
    numpy scipy pillow matplotlib safetensors filelock pyyaml packaging tqdm requests urllib3 idna
    certifi charset-normalizer typing-extensions fsspec jinja2 sympy networkx setuptools pip pandas
    pyarrow triton"
  local listing='import importlib.metadata as md, sys
print(", ".join(sorted("%s %s" % (d.metadata["Name"], d.version) for d in md.distributions(path=sys.argv[1:]))))'

  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || return 1
  py=${PY:-python3}
  if ! version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
    echo "node_env: no working python at '$py' (set PY=...)"
    return 1
  fi
  tag=py${version/./}
  wheelhouse=${WHEELHOUSE:-$root/.whl}
  site=${NODE_SITE:-$root/.node-site/$tag}
  case $wheelhouse in /*) ;; *) wheelhouse=$PWD/$wheelhouse ;; esac # PYTHONPATH outlives a cd
  case $site in /*) ;; *) site=$PWD/$site ;; esac
  for f in "$wheelhouse"/*.whl; do
    [ -e "$f" ] || continue
    wheels=$((wheels + 1))
    # WANDB=1 put wandb into the wheelhouse: then it is wanted too (logger=wandb)
    case ${f##*/} in wandb-*) found_modules="$found_modules wandb" ;; esac
  done

  # PYTHONPATH without earlier copies of ours (sourcing twice adds nothing), then site, root
  pp=":${PYTHONPATH:-}:"
  pp=${pp//:$site:/:}
  pp=${pp//:$root:/:}
  pp=${pp#:}
  pp=${pp%:}
  pp=$root${pp:+:$pp}
  [ -d "$site" ] && pp=$site:$pp # installed by an earlier shell: try it before installing again

  # shellcheck disable=SC2086  # lists of module names
  missing=$(PYTHONPATH=$pp "$py" -c "$check" $wheel_modules ${NODE_MODULES:-} \
    --find $found_modules --image $image_modules)
  if [ -z "$missing" ]; then
    export PYTHONPATH=$pp
    echo "node_env: $py ($version) imports all imbadv needs, nothing missing;" \
      "PYTHONPATH starts with ${pp%%"$root"*}$root"
    return 0
  fi
  if [ "$wheels" = 0 ]; then
    echo "node_env: $py ($version) lacks $missing and there is no wheelhouse at $wheelhouse:" \
      "run \`make wheelhouse\` where pip reaches an index and copy .whl/ there (docs/gpu.md)"
    return 1
  fi
  names=$(PYTHONPATH=$pp "$py" -c "$pick" "$wheelhouse" "$site" "$image_dists")
  if [ -z "$names" ]; then
    echo "node_env: $py ($version) lacks $missing, and $wheelhouse has nothing this python" \
      "lacks (installed but broken? import it to see): add its wheels there (docs/gpu.md)"
    return 1
  fi
  log=$(mktemp) || return 1
  # --isolated and no config file: the wheelhouse alone, whatever PIP_* or pip.conf say here
  # shellcheck disable=SC2086  # a list of distribution names
  if ! PIP_CONFIG_FILE=/dev/null "$py" -m pip --isolated --disable-pip-version-check install \
    --no-index --no-deps --find-links "$wheelhouse" --target "$site" --upgrade \
    --no-warn-script-location $names >"$log" 2>&1; then
    echo "node_env: pip could not install $names from $wheelhouse into $site:" \
      "$(grep -v '^[[:space:]]*$' "$log" | tail -n 1)"
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
  pp=$site:${pp#"$site":}
  # shellcheck disable=SC2086
  missing=$(PYTHONPATH=$pp "$py" -c "$check" $wheel_modules ${NODE_MODULES:-} \
    --find $found_modules --image $image_modules)
  installed=$("$py" -c "$listing" "$site")
  if [ -n "$missing" ]; then
    echo "node_env: installed $installed into $site, but $py ($version) still lacks $missing:" \
      "the image must have it, or add its wheels to $wheelhouse (docs/gpu.md)"
    return 1
  fi
  export PYTHONPATH=$pp
  echo "node_env: installed $installed into $site (from $wheelhouse); PYTHONPATH starts with" \
    "$site:$root"
}

# Executed rather than sourced: the check and the install still happen, PYTHONPATH does not stick.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  _imbadv_node_env
  _imbadv_rc=$?
  echo "node_env: run as a command, it cannot set PYTHONPATH here: source scripts/node_env.sh" >&2
  exit "$_imbadv_rc"
fi
case $- in *e*) _imbadv_errexit=1 ;; *) _imbadv_errexit=0 ;; esac
set +e
_imbadv_node_env
_imbadv_rc=$?
[ "$_imbadv_errexit" = 1 ] && set -e
unset -f _imbadv_node_env
unset _imbadv_errexit
# the file's status, for `source scripts/node_env.sh || exit 1` (eval: the value, then unset)
eval "unset _imbadv_rc; return $_imbadv_rc"
