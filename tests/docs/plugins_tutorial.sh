#!/usr/bin/env bash
# Runs the "## Writing a plugin" tutorial of docs/PLUGINS.md exactly as a
# reader would, so the doc cannot rot: extracts its ```sh blocks in order and
# runs them in one shell, then checks what `switchyard plugin run` printed.
#
#   bash tests/docs/plugins_tutorial.sh path/to/switchyard
#
# The tutorial starts at the root of a Switchyard clone and creates its crate
# in the parent directory (`cd ..`). To keep that parent clean, we run it from
# a symlink to this repo inside a scratch directory: the crate lands in the
# scratch directory. The tutorial copies its build into plugins/dist as
# my-plugin.wasm; that file is removed on exit.
set -euo pipefail

bin=${1:?usage: plugins_tutorial.sh path/to/switchyard}
[[ -x "$bin" ]] || { echo "plugins_tutorial.sh: $bin is not an executable switchyard binary" >&2; exit 2; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
repo=$(cd "$(dirname "$0")/../.." && pwd)
doc="$repo/docs/PLUGINS.md"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-tutorial.XXXXXX")
cleanup() {
    rm -f "$repo/plugins/dist/my-plugin.wasm"
    rm -rf "$scratch"
}
trap cleanup EXIT

# The sh blocks of the "## Writing a plugin" section, in order.
script="$scratch/tutorial.sh"
awk '
    /^## / { in_section = ($0 == "## Writing a plugin") }
    in_section && /^```sh$/ { in_block = 1; next }
    in_block && /^```$/ { in_block = 0; print ""; next }
    in_block { print }
' "$doc" > "$script"
blocks=$(awk '/^## /{s=($0=="## Writing a plugin")} s && /^```sh$/{n++} END{print n+0}' "$doc")
if (( blocks < 5 )); then
    echo "plugins_tutorial.sh: found only $blocks sh blocks under '## Writing a plugin' in $doc" >&2
    exit 1
fi

# Build with the repo's pinned toolchain (it has the wasm32-wasip2 target),
# even though the tutorial crate lives outside the repo.
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$repo/rust-toolchain.toml")
export RUSTUP_TOOLCHAIN="${toolchain:-stable}"
mkdir -p "$repo/plugins/dist"
ln -s "$repo" "$scratch/switchyard"

log="$scratch/tutorial.log"
echo "plugins_tutorial.sh: running $blocks sh blocks from $doc (toolchain $RUSTUP_TOOLCHAIN)"
(
    cd "$scratch/switchyard"
    # `switchyard` as the reader has it on PATH.
    switchyard() { "$bin" "$@"; }
    export -f switchyard 2>/dev/null || true
    export bin
    set -x
    # shellcheck disable=SC1090
    source "$script"
) 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if (( status != 0 )); then
    echo "plugins_tutorial.sh: FAILED: a tutorial command exited with $status (see above)" >&2
    exit 1
fi

# What the reader is told to expect.
fail=0
expect() {
    if grep -qF -- "$1" "$log"; then
        echo "ok: $2"
    else
        echo "FAILED: $2 (no line containing: $1)" >&2
        fail=1
    fi
}
[[ -f "$scratch/my-plugin/target/wasm32-wasip2/release/my_plugin.wasm" ]] \
    && echo "ok: the component was built" || { echo "FAILED: no my_plugin.wasm" >&2; fail=1; }
expect '"outcome":"replace"' 'plugin run replaces the body'
expect '{\"text\":\"license.created: licenses 9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a\"}' 'the body is the chat line for license.created'
expect '"outcome":"skip"' 'quiet event types are skipped'
expect 'license.expired: licenses 9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a' 'the plugin runs by name from the plugins folder'
expect '"x-chat-format":"plain"' 'the header is set'
expect 'test result: ok. 1 passed' 'the native test passes'
expect '"plugin":"my-plugin"' 'plugin run names the build after its crate, as it will be deployed'
expect 'chat line for license.created' 'the plugin log line reaches stderr'
expect '"kind":"bad_config"' 'a config that does not deserialize is a bad_config error, as JSON'
expect '`mention_over`: expected a non-negative integer, got' 'the error names the config field'
expect 'plugin run exited with 1' 'a failing plugin run exits non-zero'
if (( fail )); then
    echo "plugins_tutorial.sh: 0 passed, 1 failed"
    exit 1
fi
echo "plugins_tutorial.sh: 1 passed, 0 failed"
