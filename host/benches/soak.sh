#!/usr/bin/env bash
# Long reliability soaks (not in CI): many crash rounds, and a restart with
# a backlog of pending deliveries. Prints the FIGURES lines that
# docs/RELIABILITY.md records.
#
#   host/benches/soak.sh                 # 25 crash rounds + 1,000,000 backlog
#   ROUNDS=50 BACKLOG=200000 host/benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS="${ROUNDS:-25}"
BACKLOG="${BACKLOG:-1000000}"
cargo build --release -p switchyard --tests
echo "== crash rounds: $ROUNDS"
SWITCHYARD_CRASH_ROUNDS="$ROUNDS" cargo test --release -p switchyard --test it reliability::crash::crash_rounds -- --nocapture 2>&1 | grep -E "FIGURES|test result|panicked|LOST"
echo "== restart with backlog: $BACKLOG pending deliveries"
SWITCHYARD_BACKLOG="$BACKLOG" cargo test --release -p switchyard --test it reliability::soak::restart_with_backlog -- --ignored --nocapture 2>&1 | grep -E "FIGURES|backlog:|test result|panicked"
