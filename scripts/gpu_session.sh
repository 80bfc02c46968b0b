#!/usr/bin/env bash
# One call on a lent single-GPU machine (the device tool), everything the GPU is needed for:
#   1. `layerpar bench --one-device --device cuda --predict` alone on the GPU (issue 4: per-stage
#      GPU profile, single-GPU step times, the model's prediction for 2-8 GPUs);
#   2. then the accuracy-parity runs (issue 5) as parallel processes sharing the GPU.
# Each run writes its JSON when it finishes; whatever is done by the deadline comes back in
# $OUT/gpu_results.tar.gz.  Needs .data/datasets.tar.gz (MNIST + Fashion-MNIST, carried).
#
#   device run: bash scripts/gpu_session.sh   (carry .data)
set -u
DEADLINE=${DEADLINE:-540}          # seconds from start until everything is stopped and packed
START=$(date +%s)
export PYTHONPATH=$PWD LAYERPAR_DATA=/tmp/layerpar-data OMP_NUM_THREADS=2
mkdir -p "$LAYERPAR_DATA" && tar xzf .data/datasets.tar.gz -C "$LAYERPAR_DATA"
RES=/tmp/gpu_results && mkdir -p $RES/bench $RES/parity
left() { echo $(( DEADLINE - ($(date +%s) - START) )); }
nvidia-smi > $RES/nvidia-smi.txt 2>&1
python -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))' > $RES/versions.txt 2>&1

# 1. Bench, alone on the GPU.
timeout ${BENCH_TIMEOUT:-200} python -m layerpar bench --config configs/demo.yaml --one-device --device ${DEVICE:-cuda} \
  --stages 2,3,4,6,8 --repeats 3 --steps 30 --warmup-steps 10 --predict --max-stages 8 --link nvlink \
  --arms serial,layerpar,ddp,gpipe,1f1b --out $RES/bench --name gpu-demo-resnet20 > $RES/bench/log.txt 2>&1
echo "bench rc=$? at $(( $(date +%s) - START ))s" >> $RES/timeline.txt

# 2. Parity, in parallel (most important first: the OS runs them all; order only matters for logs).
sweep() { local tag=$1; shift; timeout $(left) python scripts/parity_sweep.py --out $RES/parity "$@" \
  > $RES/parity/log_$tag.txt 2>&1; echo "$tag rc=$? at $(( $(date +%s) - START ))s" >> $RES/timeline.txt; }
for seed in 0 1 2; do
  sweep fmnist-s$seed --stage 2 --variant al-b0.01-hybrid0.5 --datasets fashion_mnist --seeds $seed &
  sweep mnist-s$seed --stage 2 --variant al-b0.01-hybrid0.5 --datasets mnist --seeds $seed &
done
sweep screen --stage 1 --prefix gpu --only delayed-b0.01-hybrid0.5,delayed-b0.1-hybrid0.5,delayed-b0-hybrid0.5,delayed-b1-hybrid0.5,delayed-b0.03-hybrid0.5,delayed-b0.1,al-b0.01-aux16x2-stride2-hybrid0.5,delayed-b0.1-aux16x2-stride2-hybrid0.5 &
sweep r56-s0 --stage 2 --variant al-b0.01-hybrid0.5 --model resnet56 --datasets fashion_mnist --seeds 0 --stages 4 &
sweep delayed-s0 --stage 2 --variant delayed-b0.1-hybrid0.5 --datasets fashion_mnist --seeds 0 &
sleep 5
while [ "$(left)" -gt 15 ] && [ -n "$(jobs -r)" ]; do sleep 5; done
pkill -f parity_sweep.py; sleep 2
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv >> $RES/nvidia-smi.txt 2>&1
echo "packed at $(( $(date +%s) - START ))s" >> $RES/timeline.txt
tar czf "$OUT/gpu_results.tar.gz" -C $RES .
