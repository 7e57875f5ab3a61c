#!/usr/bin/env bash
# VAE training and inference on one GPU: float32, TF32 and bfloat16 against the
# device's matmul rate (benchmarks/gpu.py; results/gpu.json).
#
#   benchmarks/gpu.sh                      # current python, --device gpu
#   benchmarks/gpu.sh --venv /tmp/sd-gpu   # fresh venv with the [gpu] extra first
#   benchmarks/gpu.sh --device cpu         # smoke mode, tiny sizes, under a minute
#
# Other options go to benchmarks/gpu.py (--out PATH).  The measurement is
# stopped after 8 minutes (BENCH_TIMEOUT, seconds); installing the extra
# (tensorflow[and-cuda], a few GB of CUDA wheels) comes before and is not in it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
venv=""
device=gpu
args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --venv) venv=$2; shift 2 ;;
        --device) device=$2; args+=("$1" "$2"); shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
if [[ -n $venv ]]; then
    # tensorflow and tensorflow-cpu cannot share an environment: one extra each.
    extra=$([[ $device == cpu ]] && echo cpu || echo gpu)
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$root[$extra]"
    python=$venv/bin/python
fi
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec timeout "${BENCH_TIMEOUT:-480}" "$python" benchmarks/gpu.py "${args[@]}"
