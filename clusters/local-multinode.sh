#!/usr/bin/env bash
# A two-node Ray cluster on one machine: a head and a second worker node (separate raylets), for tests
# and for trying multi-node sweeps locally. Both nodes use this checkout's .venv. Each cluster keeps its
# own temp dir, so `stop` ends this cluster only, never other Ray sessions on the machine.
#   clusters/local-multinode.sh start [PORT] [CPUS_PER_NODE]   -> prints the address to pass as --address
#   clusters/local-multinode.sh remove-worker PORT              -> the worker node dies (SIGKILL of its raylet)
#   clusters/local-multinode.sh stop PORT
#   peft-arena sweep quick --address 127.0.0.1:PORT
set -euo pipefail
cd "$(dirname "$0")/.."
RAY=${RAY:-.venv/bin/ray}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}   # token auth is on by default since Ray 2.60
port=${2:-6390}
temp="/tmp/ray-arena-$port"                        # short: Ray's unix socket paths must stay < 108 bytes
case "${1:-}" in
  start)
    cpus=${3:-1}
    "$RAY" start --head --node-ip-address=127.0.0.1 --port="$port" --num-cpus="$cpus" --temp-dir="$temp" \
        --include-dashboard=false --disable-usage-stats >/dev/null
    "$RAY" start --address="127.0.0.1:$port" --node-ip-address=127.0.0.1 --num-cpus="$cpus" \
        --disable-usage-stats >/dev/null
    echo "127.0.0.1:$port"
    ;;
  remove-worker)
    # the newest raylet of this cluster is the worker node's (the head's started first)
    pid=$(pgrep -f "raylet.*$temp" | sort -n | tail -1)
    [ -n "$pid" ] && kill -9 "$pid"
    ;;
  stop)
    pkill -9 -f -- "$temp" || true
    rm -rf "$temp"
    ;;
  *)
    echo "usage: $0 start [PORT] [CPUS_PER_NODE] | remove-worker PORT | stop PORT" >&2; exit 2 ;;
esac
