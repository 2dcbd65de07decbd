#!/usr/bin/env bash
# Installs the Debian packages and builds mqd and the integration templates' services (Release)
# into $MQ_BUILD_ROOT/release (default build/release): mqd/mqd, examples/services/producer_service,
# examples/services/consumer_service. cmake/run.sh and the Dockerfile's build stage run it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash cmake/install-deps.sh
root=$(realpath -m "${MQ_BUILD_ROOT:-build}")
cmake -S . -B "$root/release" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMQ_BUILD_TESTS=OFF -DMQ_BUILD_BENCH=OFF \
  -DMQ_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$root/release" --target mqd producer_service consumer_service -j "$(nproc)"
