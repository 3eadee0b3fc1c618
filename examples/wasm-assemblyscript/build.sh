#!/usr/bin/env bash
# Builds the AssemblyScript example into a plugin folder ready to load:
#   build.sh [OUT]   (default: <repository>/.noa/wasm-examples/textstats)
# writes OUT/plugin.wasm and OUT/wasm.toml. Skipped when OUT is newer than every input.
# Without npm it says so and exits 0: only the tests that use the module skip.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$(cd "$here/../.." && pwd)/.noa/wasm-examples/textstats}"
inputs=("$here/assembly/index.ts" "$here/asconfig.json" "$here/package.json"
    "$here/package-lock.json" "$here/wasm.toml")
if [ -f "$out/plugin.wasm" ] && [ -f "$out/wasm.toml" ]; then
    stale=0
    for input in "${inputs[@]}"; do
        if [ "$input" -nt "$out/plugin.wasm" ]; then stale=1; fi
    done
    if [ "$stale" -eq 0 ]; then
        echo "wasm-assemblyscript: $out is up to date" >&2
        exit 0
    fi
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "wasm-assemblyscript: npm not found (install Node.js 20+): the AssemblyScript" \
        "example is not built and the tests that use it will skip" >&2
    exit 0
fi
cd "$here"
npm ci --no-audit --no-fund --loglevel=error
mkdir -p "$out"
npx --no-install asc assembly/index.ts --target release --outFile "$out/plugin.wasm.tmp"
cp wasm.toml "$out/wasm.toml"
mv "$out/plugin.wasm.tmp" "$out/plugin.wasm"
echo "wasm-assemblyscript: built $out" >&2
