#!/usr/bin/env bash
# Second, shorter device call (after scripts/gpu_session.sh): the one-device bench on a 4x wider
# ResNet-20 (batch 256), where a GPU step is compute- rather than launch-bound; then two K = 4
# parity levers on full Fashion-MNIST.  Results in $OUT/gpu_results2.tar.gz.
set -u
DEADLINE=${DEADLINE:-250}
START=$(date +%s)
export PYTHONPATH=$PWD LAYERPAR_DATA=/tmp/layerpar-data OMP_NUM_THREADS=2
mkdir -p "$LAYERPAR_DATA" && tar xzf .data/datasets.tar.gz -C "$LAYERPAR_DATA"
RES=/tmp/gpu_results2 && mkdir -p $RES/bench $RES/parity
left() { echo $(( DEADLINE - ($(date +%s) - START) )); }
timeout ${BENCH_TIMEOUT:-110} python -m layerpar bench --config configs/demo.yaml --set model.width=4 --set train.batch_size=256 \
  --one-device --device ${DEVICE:-cuda} --stages 2,4 --repeats 2 --steps 20 --warmup-steps 5 --predict \
  --max-stages 8 --link nvlink --arms serial,layerpar,ddp,gpipe,1f1b --out $RES/bench --name gpu-demo-resnet20w4-b256 \
  > $RES/bench/log.txt 2>&1
echo "bench rc=$? at $(( $(date +%s) - START ))s" >> $RES/timeline.txt
sweep() { local tag=$1; shift; timeout $(left) python scripts/parity_sweep.py --out $RES/parity "$@" \
  > $RES/parity/log_$tag.txt 2>&1; echo "$tag rc=$? at $(( $(date +%s) - START ))s" >> $RES/timeline.txt; }
sweep delayed-K4 --stage 2 --variant delayed-b0.01-hybrid0.5 --datasets fashion_mnist --seeds 0 --stages 4 --skip-serial &
sweep aux16-K4 --stage 2 --variant al-b0.01-aux16x2-hybrid0.5 --datasets fashion_mnist --seeds 0 --stages 4 --skip-serial &
sleep 5
while [ "$(left)" -gt 8 ] && [ -n "$(jobs -r)" ]; do sleep 3; done
pkill -f parity_sweep.py; sleep 1
echo "packed at $(( $(date +%s) - START ))s" >> $RES/timeline.txt
tar czf "$OUT/gpu_results2.tar.gz" -C $RES .
