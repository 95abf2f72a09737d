#!/usr/bin/env bash
# MoE layers measured by `causal-tuner perfdb collect --op moe` on one lent GPU: the three runs of
# `gpu_collect.sh` (two CUDA-graph seeds, one eager) for the MoE sweep alone, packed as
# $OUT/moe_<run>.tgz for `benchmarks/moe_check.py`. SYSTEM as in gpu_collect.sh.
OPS=moe exec bash "$(dirname "$0")/gpu_collect.sh"
