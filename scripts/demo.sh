#!/usr/bin/env bash
# The main job on the bundled default: set up the environment (first use) and run the demo, writing
# its outputs to out/demo (or the folder given with --out).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$HERE/setup_env.sh"
# shellcheck source=env.sh
source "$HERE/env.sh"
cd "$ROOT"
exec python -m cloudypoints_core.cli demo "$@"
