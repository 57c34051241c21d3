#!/usr/bin/env bash
# Rebuild constraints.txt: the exact versions the test suite was last run and passed with.
#
#   bash tools/refresh_constraints.sh          # then run the README's test command and commit if it passes
#
# Why: pyproject.toml states what Studiolo needs (">="), so a fresh `pip install` takes the newest releases.
# A new release can break a suite that passed yesterday (redis 8.2 started annotating `pubsub()` and mypy's
# strict check failed on a now-unused `type: ignore`). The README's commands and .ci/run install with
# `-c constraints.txt`, so a fresh machine gets the versions that were tested. This script resolves the newest
# releases again in a throw-away venv and writes them down; refresh on purpose, test, and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# torch stays pinned as in the README (2.13.0: the CPU build on the CI machines' disk).
"$venv/bin/python" -m pip install -q torch==2.13.0 -e ".[test]"
{
  echo "# Tested versions of every package the README's install and test commands bring in."
  echo "# Made by tools/refresh_constraints.sh on $(date -u +%Y-%m-%d) with $("$venv/bin/python" --version)."
  echo "# Used as: pip install ... -c constraints.txt (README, .ci/run). Local version labels (+cpu) are dropped"
  echo "# so that a CUDA build of the same torch release also satisfies the pin."
  "$venv/bin/python" -m pip freeze --exclude-editable --exclude studiolo | sed -E 's/\+[A-Za-z0-9.]+$//' | LC_ALL=C sort -f
} > constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages); now run the README's test command"
