#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh machine:
#   bash tests/run.sh
# 1. the Rust toolchain and the wasm32-wasip2 target (rust-toolchain.toml),
# 2. the independent Python clients the tests check our output against
#    (standardwebhooks, svix, segment-analytics-python, amplitude-analytics,
#    cryptography, prometheus_client),
# 3. `cargo test --release --workspace`: unit tests, the plugin runtime with
#    real wasm built from source, end-to-end tests of the real binary,
# 4. the plugin tutorials of docs/PLUGINS.md (Rust, Python, JavaScript), run
#    as written; the dashboard's browser test needs Chromium and its driver
#    (tests/ci/dashboard.sh), the plugin toolchains componentize-py and
#    componentize-js (tests/ci/polyglot.sh).
# First of all, the README's serve command from a clean clone with the wasm
# target removed (tests/docs/fresh_start.sh). A throw-away PostgreSQL
# cluster (tests/ci/postgres.sh) serves the PostgreSQL backend's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== fresh start: README serve command, clean clone, no wasm target"
bash tests/docs/fresh_start.sh

echo "== toolchain"
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
rustup target add wasm32-wasip2 >/dev/null

echo "== PostgreSQL: a throw-away cluster for the tests (stopped on exit)"
pgenv=$(bash tests/ci/postgres.sh start)
eval "$pgenv"
trap 'bash tests/ci/postgres.sh stop "$SWITCHYARD_TEST_PG_DIR"' EXIT

echo "== python test clients"
if ! python3 -c 'import standardwebhooks, svix, segment.analytics, amplitude, cryptography, prometheus_client' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check -r tests/ecosystem/requirements.txt
fi

echo "== dashboard browser test: chromium, chromium-driver, selenium"
bash tests/ci/dashboard.sh

echo "== plugin toolchains: componentize-py, componentize-js"
bash tests/ci/polyglot.sh

echo "== cargo test"
# Everything but the Python/JavaScript plugin tests, which build and
# compile 12–18 MB components (minutes of CPU): they run next, alone, so
# they do not make the timing-sensitive tests of the rest share the cores.
cargo test --release --workspace -- --skip polyglot::

echo "== cargo test: the end-to-end delivery and batching tests again, on PostgreSQL"
SWITCHYARD_TEST_BACKEND=postgres cargo test --release -p switchyard --test it -- delivery:: batching::

echo "== cargo test: Python and JavaScript plugins"
cargo test --release -p switchyard --test it -- polyglot::

echo "== docs/PLUGINS.md tutorial"
bash tests/docs/plugins_tutorial.sh target/release/switchyard

echo "== docs/PLUGINS.md Python and JavaScript tutorials"
bash tests/docs/polyglot_tutorial.sh target/release/switchyard python
bash tests/docs/polyglot_tutorial.sh target/release/switchyard js
