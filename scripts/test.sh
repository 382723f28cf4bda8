#!/usr/bin/env bash
# The whole test suite, as CI runs it, on a fresh Debian 12 machine or a developer's.
#
# 1. As root, installs the Debian packages the tests need when they are missing
#    (scripts/install-test-deps.sh); as another user, says what is missing.
# 2. Uses the active virtualenv, or creates .venv, and installs the package with its
#    test extras.
# 3. Lints (ruff), type-checks the pure core (mypy --strict), runs pytest.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x scripts/install-test-deps.sh ]; then
    scripts/install-test-deps.sh
fi

if [ -z "${VIRTUAL_ENV:-}" ]; then
    if [ ! -x .venv/bin/python ]; then
        if ! python3 -m venv .venv >/dev/null 2>&1; then
            if [ "$(id -u)" = 0 ]; then
                apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
                rm -rf .venv && python3 -m venv .venv
            else
                echo "python3 -m venv failed: install python3-venv" >&2
                exit 1
            fi
        fi
    fi
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi

python -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff"
lint_paths=(src tests scripts scripts/rdp-test-server scripts/compile-contract)
[ -d bench ] && lint_paths+=(bench)
ruff check "${lint_paths[@]}"
ruff format --check "${lint_paths[@]}"
echo "== mypy --strict (pure core: formats, crypto, Merkle, security, audit chain)"
mypy --strict \
    src/lucid_sessions/recording/codec.py \
    src/lucid_sessions/recording/chunker.py \
    src/lucid_sessions/recording/synthetic.py \
    src/lucid_sessions/chunkfile.py \
    src/lucid_sessions/manifest.py \
    src/lucid_sessions/merkle.py \
    src/lucid_sessions/crypto \
    src/lucid_sessions/security \
    src/lucid_sessions/audit.py
echo "== pytest"
python -m pytest "$@"
