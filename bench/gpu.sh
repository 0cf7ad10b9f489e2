#!/usr/bin/env bash
# Every GPU figure, one command a mode: each fits in 10 minutes on one H200-class GPU, and each part has its own
# time limit, so one that runs long cannot take the others' time (overhead.py and population.py keep the rows a
# limit cuts short, beside their sections; presets.py stops its runs 50 s before its part's limit, with SIGTERM,
# so that they write what they reached and the table is written).
#
#   bash bench/gpu.sh             the CUDA tests and the GPU benchmarks (about 8 minutes)
#   bash bench/gpu.sh --presets   the Fashion-MNIST ConvNet preset and the steps to it, 3 seeds each, each
#                                 candidate's seeds one population (bench/presets.py --population; its runs
#                                 stopped at 190 s, not yet timed)
#   bash bench/gpu.sh --resnet    the ResNet preset's 3 seeds as one population (one vmapped step for the three),
#                                 stopped at 510 s
#   bash bench/gpu.sh --search    the recipe's staged search on the ConvNet preset, then its best 5 runs ensembled
#                                 beside its choice and the preset over 3 seeds (bench/presets.py --search; at most
#                                 8 minutes, not yet timed)
#   options: [--results FILE] [--out DIR]
#
# It runs the expt that python imports (an installed wheel is fine: nothing assumes an editable install)
# and installs nothing. The benchmarks write their sections of bench/RESULTS.md (or FILE); the preset runs
# go to DIR (default outputs/presets). data=fashion_mnist must find its files (see the README).
set -uo pipefail
cd "$(dirname "$0")/.."
results=bench/RESULTS.md
mode=benchmarks
out=outputs/presets
while [ $# -gt 0 ]; do
  case "$1" in
    --presets|--search|--resnet)
      if [ $mode != benchmarks ] && [ $mode != "${1#--}" ]; then
        echo "bench/gpu.sh: $1 and --$mode are run one at a time: give one of them" >&2; exit 2
      fi
      mode=${1#--} ;;
    --results) results=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "bench/gpu.sh: unknown option $1 (allowed: --presets, --resnet, --search, --results FILE, --out DIR)" >&2
       exit 2 ;;
  esac
  shift
done
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
failed=0
part() {  # part SECONDS command...: run one part under its own limit, say how it ended
  local limit=$1 start=$SECONDS
  shift
  echo "== $* (limit ${limit}s, $(date +%T))"
  timeout "$limit" "$@"
  local rc=$?
  echo "== exit $rc after $((SECONDS - start))s"
  [ $rc -eq 0 ] || failed=1
}
$py -c 'import torch, expt; assert torch.cuda.is_available(), "no CUDA device"; print("expt from", expt.__file__, "on", torch.cuda.get_device_name())' || exit 1
case $mode in
  presets)  # the ConvNet's steps, all five candidates at once
    part 240 $py bench/presets.py --only convnet --population --parallel 5 --stop-after 190 --out "$out" \
      --results "$results" ;;
  resnet)
    part 560 $py bench/presets.py --population --only "resnet: ResNet-20 x2 width (the preset)" --stop-after 510 \
      --out "$out" --results "$results" ;;
  search)
    part 480 $py bench/presets.py --search --only "convnet: + weight average" --only chosen --parallel 6 \
      --deadline 300 --stop-after 430 --out "$out" --results "$results" ;;
  benchmarks)
    part 100 $py -m pytest -q -p no:cacheprovider -m cuda tests
    part 90 $py bench/throughput.py --device cuda --models convnet --batches 64 512 \
      --modes eager "eager, not captured" "channels last" "amp bf16" --results "$results"
    part 90 $py bench/overhead.py --device cuda --quick --only "convnet / digits" \
      --only "fashion_mnist preset / 10k slice" --results "$results"
    part 150 $py bench/population.py --device cuda --cases "convnet / digits 1x8x8" "convnet / synthetic 3x32x32" \
      --sizes 1 16 64 --basic-trials 4 --results "$results"
    part 75 $py bench/sweeps.py --overhead --device cuda --only population --repeats 1 --rounds 4 16 \
      --results "$results"
    part 30 $py bench/measuring.py --device cuda --reps 3 --results "$results" ;;
esac
exit $failed
