#!/usr/bin/env bash
# MoE layers measured by `causal-tuner perfdb collect --op moe` on one lent GPU (the device
# tool's machine): two CUDA-graph runs (seeds 0 and 1, for the run-to-run spread) and one eager
# run (seed 0, for the host's launch gaps), each packed as $OUT/<run>.tgz for
# `benchmarks/moe_check.py`. Runs from the repository root with the machine's own python3.
set -u
OUT=${OUT:-/tmp/gpu_moe_out}
SYSTEM=${SYSTEM:-h200_sxm} # the perfdb system the GPU is (its bundled tables are the reference)
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw \
    --format=csv | tee "$OUT/nvidia_smi.csv"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
run() {
    name=$1
    shift
    start=$(date +%s)
    PYTHONUNBUFFERED=1 timeout 240 python3 -c "from perfdb.cli import perfdb; perfdb()" \
        collect --system "$SYSTEM" --device cuda --world-size 1 --op moe \
        --out "/tmp/pdb_$name" "$@" >"$OUT/$name.log" 2>&1
    echo "$name: exit $? in $(($(date +%s) - start)) s"
    grep -av "shape/s\]" "$OUT/$name.log" | tail -3
    tar czf "$OUT/$name.tgz" -C "/tmp/pdb_$name" . 2>/dev/null
}
run moe_graphs_seed0 --seed 0
run moe_graphs_seed1 --seed 1
run moe_eager_seed0 --seed 0 --no-graphs
nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
