#!/usr/bin/env bash
# Set up kmemtrace in ./.venv (idempotent).
#   bash scripts/setup.sh                 replay, synth, reports: Python packages only
#   bash scripts/setup.sh --kernel-tools  also what `record` and its tests need (Debian, root):
#                                         BCC from Debian (python3-bpfcc; the PyPI "bcc" is an
#                                         unrelated lattice library), kernel headers, bpftrace,
#                                         perf, gcc, and chromium (the HTML report test)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--kernel-tools" ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends \
    python3-bpfcc bpfcc-tools bpftrace linux-headers-amd64 linux-perf gcc util-linux \
    chromium
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
