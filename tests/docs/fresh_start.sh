#!/usr/bin/env bash
# The README's first command on a fresh machine: a clean clone of HEAD, the
# wasm32-wasip2 target removed (rustup does not add rust-toolchain.toml's
# targets to a linked toolchain), then `cargo run --release -- serve` exactly
# as the README says. Passes when the router answers /readyz and its bundled
# plugins loaded. Shares the outer target dir so dependencies build once.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

git clone --quiet "$root" "$work/switchyard"
cd "$work/switchyard"
if rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target remove wasm32-wasip2 >/dev/null 2>&1
fi
rustup target list --installed | grep -qx wasm32-wasip2 && { echo "could not remove the wasm target"; exit 1; }

export CARGO_TARGET_DIR="$root/target"
cargo run --release -- serve >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 1200); do
    if curl -fsS http://127.0.0.1:8686/readyz >/dev/null 2>&1; then
        break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "serve exited before it was ready:"; tail -n 40 "$work/serve.log"; exit 1
    fi
    sleep 1
done
curl -fsS http://127.0.0.1:8686/readyz >/dev/null || { echo "not ready after 20 min"; tail -n 40 "$work/serve.log"; exit 1; }
grep -q "wasm32-wasip2 target was missing" "$work/serve.log" || { echo "build.rs did not report adding the target"; tail -n 40 "$work/serve.log"; exit 1; }
rustup target list --installed | grep -qx wasm32-wasip2 || { echo "target still missing"; exit 1; }
ls plugins/dist/*.wasm >/dev/null
echo "fresh start: ok (target added by the build, router ready, $(ls plugins/dist/*.wasm | wc -l) bundled plugins built)"
