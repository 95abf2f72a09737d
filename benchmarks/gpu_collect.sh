#!/usr/bin/env bash
# The GPU path of `causal-tuner perfdb collect` on one lent GPU (the device tool's machine):
# three full sweeps, bf16 and fp8 GEMMs (CUDA graphs with seeds 0 and 1 for the run-to-run spread; eager launches
# with seed 0 for the launch gaps), each packed as $OUT/<run>.tgz for
# `benchmarks/collector_check.py`. With OPS set (e.g. OPS=moe, as `gpu_moe.sh` does) only those
# sweeps run and the runs are named <ops>_<run>. Runs from the repository root with the machine's
# own python3 (PyTorch, pandas, pyarrow, click and PyYAML are in its image).
set -u
OUT=${OUT:-/tmp/gpu_collect_out}
SYSTEM=${SYSTEM:-h200_sxm} # the perfdb system the GPU is (its bundled tables are the reference)
OPS=${OPS:-}
if [ -n "$OPS" ]; then
    extra=()
    for op in $OPS; do extra+=(--op "$op"); done
    prefix="${OPS// /_}_"
else
    extra=(--gemm-dtype fp8)
    prefix=""
fi
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw \
    --format=csv | tee "$OUT/nvidia_smi.csv"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
run() {
    name=$prefix$1
    shift
    start=$(date +%s)
    PYTHONUNBUFFERED=1 timeout 240 python3 -c "from perfdb.cli import perfdb; perfdb()" \
        collect --system "$SYSTEM" --device cuda --world-size 1 --out "/tmp/pdb_$name" \
        "${extra[@]}" "$@" >"$OUT/$name.log" 2>&1
    echo "$name: exit $? in $(($(date +%s) - start)) s"
    grep -av "shape/s\]" "$OUT/$name.log" | tail -3
    tar czf "$OUT/$name.tgz" -C "/tmp/pdb_$name" . 2>/dev/null
}
run graphs_seed0 --seed 0
run graphs_seed1 --seed 1
run eager_seed0 --seed 0 --no-graphs
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
