#!/usr/bin/env bash
# Builds mqd (Release, cmake/build-release.sh) and starts it on its defaults: PORT=8080,
# DATA_DIR=./data, TOPICS=events:8,orders:4,default:8, FSYNC=always. Any variable of the
# configuration table in docs/http-api.md set in the environment changes that.
set -euo pipefail
cd "$(dirname "$0")/.."
bash cmake/build-release.sh
root=$(realpath -m "${MQ_BUILD_ROOT:-build}")
exec "$root/release/mqd/mqd"
