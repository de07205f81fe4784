#!/usr/bin/env bash
# Toolchains for Python and JavaScript plugins (issue 15), for the tests in
# tests/it/polyglot.rs and the tutorials of docs/PLUGINS.md:
#   * componentize-py 0.25.1 from PyPI (on PATH),
#   * @bytecodealliance/componentize-js 0.23.0 from npm, installed into
#     target/js-toolchain (the tests and the examples' READMEs use it there
#     through SWITCHYARD_JS_TOOLCHAIN, or install it next to the project).
# Idempotent: a second run only checks the versions (well under a second).
set -euo pipefail
cd "$(dirname "$0")/../.."

PY_VERSION=0.25.1
JS_VERSION=0.23.0
JS_DIR=target/js-toolchain

start=$(date +%s)
if [ "$(componentize-py --version 2>/dev/null | awk '{print $2}')" != "$PY_VERSION" ]; then
    echo "installing componentize-py $PY_VERSION"
    python3 -m pip install --quiet --disable-pip-version-check "componentize-py==$PY_VERSION"
fi

installed_js=$(node -p "require('./$JS_DIR/node_modules/@bytecodealliance/componentize-js/package.json').version" 2>/dev/null || true)
if [ "$installed_js" != "$JS_VERSION" ]; then
    echo "installing @bytecodealliance/componentize-js $JS_VERSION into $JS_DIR"
    mkdir -p "$JS_DIR"
    [ -f "$JS_DIR/package.json" ] || echo '{"private": true}' > "$JS_DIR/package.json"
    npm install --prefix "$JS_DIR" --no-audit --no-fund --silent \
        "@bytecodealliance/componentize-js@$JS_VERSION"
fi
echo "polyglot toolchains ready ($(componentize-py --version), componentize-js $JS_VERSION) in $(( $(date +%s) - start )) s"
