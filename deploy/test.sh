#!/usr/bin/env bash
# The whole test suite: the README's test command.
#
# Starts whatever services the tests need on spare loopback ports (none yet: the Kafka, ClickHouse
# and Redis connectors will add theirs here), runs every test of the workspace, and stops what it
# started. Safe to run on a fresh Debian machine with rustup's cargo on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "cargo not found: install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
  fi
fi

cleanup() { :; }
trap cleanup EXIT

cargo test --workspace --locked "$@"
