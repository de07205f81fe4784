#!/usr/bin/env bash
# Runs the Python or the JavaScript tutorial of docs/PLUGINS.md exactly as a
# reader would: extracts the ```sh blocks of its section, in order, and runs
# them in one shell in a scratch directory, then checks what they printed.
#
#   bash tests/docs/polyglot_tutorial.sh path/to/switchyard python|js
#
# Needs the toolchains of tests/ci/polyglot.sh (componentize-py on PATH,
# componentize-js in target/js-toolchain, passed as COMPONENTIZE_JS the way
# the tutorial's build block allows).
set -euo pipefail

bin=${1:?usage: polyglot_tutorial.sh path/to/switchyard python|js}
lang=${2:?usage: polyglot_tutorial.sh path/to/switchyard python|js}
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
repo=$(cd "$(dirname "$0")/../.." && pwd)
doc="$repo/docs/PLUGINS.md"
case "$lang" in
    python) section="## Writing a plugin in Python"; name=my-py-filter ;;
    js) section="## Writing a plugin in JavaScript"; name=my-js-filter ;;
    *) echo "polyglot_tutorial.sh: language is python or js" >&2; exit 2 ;;
esac
export COMPONENTIZE_JS="$repo/target/js-toolchain/node_modules/.bin/componentize-js"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-$lang-tutorial.XXXXXX")
cleanup() {
    # The tutorial stops its router; make sure of it.
    if [[ -f "$scratch/router/serve.pid" ]]; then
        kill "$(cat "$scratch/router/serve.pid")" 2>/dev/null || true
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

script="$scratch/tutorial.sh"
awk -v section="$section" '
    /^## / { in_section = ($0 == section) }
    in_section && /^```sh$/ { in_block = 1; next }
    in_block && /^```$/ { in_block = 0; print ""; next }
    in_block { print }
' "$doc" > "$script"
blocks=$(grep -c . "$script" || true)
if (( blocks < 5 )); then
    echo "polyglot_tutorial.sh: no tutorial under '$section' in $doc" >&2
    exit 1
fi

log="$scratch/tutorial.log"
echo "polyglot_tutorial.sh: running the $lang tutorial from $doc"
# `switchyard` on PATH as the reader has it; a watchdog for the waits.
mkdir -p "$scratch/bin"
ln -s "$bin" "$scratch/bin/switchyard"
(
    cd "$scratch"
    export PATH="$scratch/bin:$PATH"
    timeout 1500 bash -eux "$script"
) 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if (( status != 0 )); then
    echo "polyglot_tutorial.sh: FAILED: a tutorial command exited with $status (see above)" >&2
    exit 1
fi

fail=0
expect() {
    if grep -qF -- "$1" "$log"; then
        echo "ok: $2"
    else
        echo "FAILED: $2 (no line containing: $1)" >&2
        fail=1
    fi
}
[[ -f "$scratch/$name/$name.wasm" ]] && echo "ok: the component was built" \
    || { echo "FAILED: no $name.wasm" >&2; fail=1; }
expect '"outcome":"pass"' 'plugin run passes the sample event'
expect '"reason":"status ACTIVE is not selected"' 'plugin run skips an active license'
expect "\"id\":\"$name\"" 'the running router lists the plugin'
expect '"loaded":true' 'the running router loaded it'
expect '"version":2' 'the edited plugin was reloaded into the running router'
exit $fail
