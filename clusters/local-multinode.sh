#!/usr/bin/env bash
# A two-node Ray cluster on one machine: a head and a second worker node (separate raylets), for tests
# and for trying multi-node sweeps locally. Both nodes use this checkout's .venv.
#   clusters/local-multinode.sh start [PORT] [CPUS_PER_NODE]   -> prints the address to pass as --address
#   clusters/local-multinode.sh stop
#   peft-arena sweep configs/quick.yaml --address 127.0.0.1:PORT
set -euo pipefail
cd "$(dirname "$0")/.."
RAY=${RAY:-.venv/bin/ray}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}   # token auth is on by default since Ray 2.60
case "${1:-}" in
  start)
    port=${2:-6390}; cpus=${3:-1}
    "$RAY" start --head --node-ip-address=127.0.0.1 --port="$port" --num-cpus="$cpus" \
        --include-dashboard=false --disable-usage-stats >/dev/null
    "$RAY" start --address="127.0.0.1:$port" --node-ip-address=127.0.0.1 --num-cpus="$cpus" \
        --disable-usage-stats >/dev/null
    echo "127.0.0.1:$port"
    ;;
  stop)
    "$RAY" stop --force >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: $0 start [PORT] [CPUS_PER_NODE] | stop" >&2; exit 2 ;;
esac
