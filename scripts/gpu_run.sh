#!/usr/bin/env bash
# The paper's recipe on a GPU machine in one command (scripts/gpu_paper_recipe.py, docs/distributed.md):
#
#   bash scripts/gpu_run.sh [options of `gpu_paper_recipe.py run`, e.g. --budget-seconds 420 --set train.bf16=true]
#
# Needs this working tree with gpu_pack/ped2_256 (made where the data is: `python scripts/gpu_paper_recipe.py pack
# --data ../shared/data/ped2`) and a Python with torch, numpy, opencv, scikit-learn, safetensors and tqdm; mnad runs
# from src/ (nothing to install). Writes $OUT/gpu_paper_recipe.json and $OUT/logs.tar.gz (every log: 2 files, of the 8 the
# device tool brings back), killed after LIMIT seconds (570; SIGTERM first: the JSON and the archive are still written).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
LIMIT=${LIMIT:-570}
mkdir -p "$OUT"
PY=${PYTHON:-$(command -v python3 || command -v python || true)}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

fail() {  # an answer either way: one JSON that says why (written whole, then renamed into place)
  local why=${1//\\/\\\\}
  printf '{"schema": "mnad-gpu-paper-recipe-1", "error": "%s"}\n' "${why//\"/\\\"}" > "$OUT/.gpu_paper_recipe.json.tmp" \
    && mv -f "$OUT/.gpu_paper_recipe.json.tmp" "$OUT/gpu_paper_recipe.json"
  echo "gpu_run.sh: error: $1" >&2
  exit 1
}

[ -n "$PY" ] || fail "no python3 on this machine"
echo "gpu_run.sh: $("$PY" --version 2>&1) at $PY; $(nproc) CPUs"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; print('gpu_run.sh: torch', torch.__version__, 'CUDA', torch.version.cuda, 'available:', torch.cuda.is_available())" \
  || fail "torch cannot be imported by $PY"

missing() {
  "$PY" -c 'import importlib.util as u; print(" ".join(p for m, p in (("numpy", "numpy"), ("cv2", "opencv-python-headless"),
("sklearn", "scikit-learn"), ("safetensors", "safetensors"), ("tqdm", "tqdm")) if u.find_spec(m) is None))'
}
need=$(missing)
if [ -n "$need" ]; then
  # torch is left alone (pyproject pins the CPU build's version); the rest from pip's index or cache, if it has one
  echo "gpu_run.sh: missing: $need; trying pip install $need"
  "$PY" -m pip install --disable-pip-version-check $need 2>&1 | tail -n 3
  need=$(missing)
  [ -z "$need" ] || fail "missing Python packages: $need (pip could not install them: no index reachable?)"
fi
[ -f gpu_pack/ped2_256/manifest.json ] || [[ " $* " == *" --pack "* ]] \
  || fail "gpu_pack/ped2_256 is not in this working tree: pack it where the data is and carry gpu_pack"

timeout --kill-after=15 "$LIMIT" "$PY" scripts/gpu_paper_recipe.py run --out "$OUT" "$@"
rc=$?
[ "$rc" = 124 ] && [ ! -s "$OUT/gpu_paper_recipe.json" ] && fail "gpu_paper_recipe.py ran past $LIMIT s"
exit $rc
