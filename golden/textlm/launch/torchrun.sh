#!/usr/bin/env bash
# DDP with torchrun: one process per GPU. Extra arguments go to train.py.
#   bash launch/torchrun.sh --max-epochs 3
set -euo pipefail
cd "$(dirname "$0")/.."
exec torchrun --standalone --nproc_per_node "${GPUS_PER_NODE:-1}" train.py "$@"
