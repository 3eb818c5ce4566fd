#!/usr/bin/env bash
# FSDP with torchrun: one process per GPU. Extra arguments go to train.py.
#   bash launch/torchrun.sh --max-epochs 3
# On each of the 2 machines, with the same MASTER_ADDR (machine 0's address) and NODE_RANK 0..1:
#   MASTER_ADDR=10.0.0.1 NODE_RANK=0 bash launch/torchrun.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec torchrun --nnodes "${NNODES:-2}" --node_rank "${NODE_RANK:?set NODE_RANK (0 on MASTER_ADDR)}" \
    --nproc_per_node "${GPUS_PER_NODE:-4}" \
    --rdzv_backend c10d --rdzv_endpoint "${MASTER_ADDR:?set MASTER_ADDR}:${MASTER_PORT:-29500}" \
    train.py "$@"
