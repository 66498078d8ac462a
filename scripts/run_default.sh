#!/usr/bin/env bash
# Installs tune-eegpt (scripts/setup.sh), then runs the default job end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-dev}" bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
exec .venv/bin/python -m tune_eegpt.search "$@"
