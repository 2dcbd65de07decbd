#!/usr/bin/env bash
# Builds mqd (Release) and starts it on its defaults: PORT=8080, DATA_DIR=./data,
# TOPICS=events:8,orders:4,default:8, FSYNC=always. Any variable of the API's configuration table
# set in the environment changes that.
set -euo pipefail
cd "$(dirname "$0")/.."
bash cmake/install-deps.sh
root=$(realpath -m "${MQ_BUILD_ROOT:-build}")
cmake -S . -B "$root/release" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMQ_BUILD_TESTS=OFF -DMQ_BUILD_BENCH=OFF >/dev/null
cmake --build "$root/release" --target mqd -j "$(nproc)"
exec "$root/release/mqd/mqd"
