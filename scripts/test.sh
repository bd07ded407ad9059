#!/usr/bin/env bash
# Run the whole test suite in the project's environment (set up on first use). Extra arguments go
# to pytest, e.g. scripts/test.sh -k geometry.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$HERE/setup_env.sh"
# shellcheck source=env.sh
source "$HERE/env.sh"
# Every requirement was just installed: one that does not import fails the run (test/conftest.py)
# instead of skipping the tests that need it.
export CLOUDYPOINTS_FULL_ENV=1
cd "$ROOT"
exec python -m pytest "$@"
