#!/usr/bin/env bash
# The test command: lint and type checks, Go checks, then every test tier (unit,
# privileged end-to-end). Run as root after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

echo "== ruff"; .venv/bin/ruff check chaoslab tests bench scripts; .venv/bin/ruff format --check chaoslab tests bench scripts
echo "== mypy"; .venv/bin/mypy
echo "== go"; (cd docker/go-api && test -z "$(gofmt -l .)" && go vet ./... && go test ./...)
echo "== pytest"; .venv/bin/python -m pytest -ra "$@"
