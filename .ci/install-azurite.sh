#!/usr/bin/env bash
# Azurite (Azure Storage's emulator, from the npm registry) for the az:// tests, into .ci/node
# (ignored by git). Run by .ci/run, and by tests/object_stores.py when a checkout lacks it.
set -euo pipefail
cd "$(dirname "$0")"
npm install --prefix node --no-audit --no-fund --loglevel=error azurite@3 >/dev/null
test -x node/node_modules/.bin/azurite-blob
