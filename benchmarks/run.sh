#!/usr/bin/env bash
# One command for every benchmark: builds the programs, exports the reference
# model (float32 and bfloat16) into build/ if missing, generates one 1024x768
# JPEG lesion photo, runs each configuration in its own fresh process and
# writes benchmarks/results/{results.md,results.json,chart.png}.
#   bash benchmarks/run.sh [run.py options, e.g. --repeats 9 --threads 1]
#   bash benchmarks/run.sh --prepare-only   # the reference model and the photo only
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/onednn-cap.sh
PY=/usr/bin/python3

echo "== building the benchmark programs and the C library" >&2
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j "$(nproc)" --target dermal_stages bare_forward side_by_side dermal_c > /dev/null

# The converters of this checkout's package, which loads the C library just built.
export DERMAL_LIBRARY=$PWD/build/capi/libdermal_c.so
convert() { PYTHONPATH=capi/python "$PY" -m dermal.convert "$@"; }

export_reference() {  # $1: output file, then options of python3 -m dermal.convert torchvision
  [[ -f "$1" ]] && return
  echo "== exporting $1 (about a minute)" >&2
  convert torchvision --arch efficientnet_v2_s --seed 0 --labels akiec,bcc,bkl,df,mel,nv,vasc \
    --size 300 --out "$@" >&2
}
export_reference build/reference-effnetv2s.pt
photo=build/benchmark-lesion.jpg
if [[ ! -f $photo ]]; then
  "$PY" - "$photo" <<'PYTHON'
import sys
sys.path.insert(0, "tools")
import lesions
_, _, image, _ = next(iter(lesions.generate(7, 1, 1024, 768)))
image.convert("RGB").save(sys.argv[1], quality=90)
PYTHON
fi

# --prepare-only: the reference export and the photo, for benchmarks/releases.py.
[[ ${1:-} == --prepare-only ]] && exit 0

# The bf16 candidate is written whatever its agreement, to be measured; the
# report says whether it is kept (top-1 agreement with float32 >= 99 %). Not
# where ONEDNN_MAX_CPU_ISA (or DNNL_) holds oneDNN below bfloat16 (Debian 13 here): the
# exporter and the library refuse bfloat16 there.
bf16=()
if PYTHONPATH=capi/python "$PY" -c 'import sys; from dermal.convert import modelfile; sys.exit(not modelfile.onednn_allows_bfloat16())'; then
  export_reference build/reference-effnetv2s-bf16.pt --precision bf16 --min-agreement 0
  bf16=(--bf16 build/reference-effnetv2s-bf16.pt)
else
  echo "== no bfloat16 rows: oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA or DNNL_MAX_CPU_ISA) is below bfloat16" >&2
fi

# The same network imported from Keras: a Keras 3 EfficientNetV2-S file with
# seeded weights (tools/make_keras_fixtures.py), through python3 -m dermal.convert keras.
keras=build/keras-effnetv2s.pt
if [[ ! -f $keras ]]; then
  echo "== importing $keras from a Keras EfficientNetV2-S file (about a minute)" >&2
  "$PY" tools/make_keras_fixtures.py build/keras-fixtures --families efficientnet_v2_s --size 300 >&2
  convert keras build/keras-fixtures/efficientnet_v2_s-300.keras3.keras \
    --labels akiec,bcc,bkl,df,mel,nv,vasc --out "$keras" >&2
  rm -r build/keras-fixtures  # 160 MB of Keras and tfjs files, not needed again
fi

demo=()
[[ -f examples/data/demo-model.pt ]] && demo=(--demo examples/data/demo-model.pt)
exec "$PY" benchmarks/run.py --photo "$photo" --reference build/reference-effnetv2s.pt \
  "${bf16[@]}" --keras "$keras" "${demo[@]}" "$@"
