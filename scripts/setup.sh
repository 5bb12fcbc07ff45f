#!/usr/bin/env bash
# Set up kmemtrace in ./.venv (idempotent).
#   bash scripts/setup.sh                 replay, synth, reports: Python packages only
#   bash scripts/setup.sh --kernel-tools  also what `record` and its tests need (Debian, root):
#                                         BCC from Debian (python3-bpfcc; the PyPI "bcc" is an
#                                         unrelated lattice library), kernel headers, bpftrace,
#                                         perf, gcc, and chromium (the HTML report test);
#                                         for `kmemtrace lab` (tests/test_lab.py): qemu,
#                                         Debian's stock kernel (same ABI as the headers),
#                                         busybox, and virtme-ng from PyPI (extra "lab")
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--kernel-tools" ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends \
    python3-bpfcc bpfcc-tools bpftrace linux-headers-amd64 linux-perf gcc util-linux \
    chromium \
    qemu-system-x86 linux-image-amd64 busybox-static kmod patch
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,lab]'
