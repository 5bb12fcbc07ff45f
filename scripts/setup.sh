#!/usr/bin/env bash
# Set up kmemtrace in ./.venv (idempotent).
#   bash scripts/setup.sh                 replay, synth, reports, fleet (Dask): Python packages only
#   bash scripts/setup.sh --kernel-tools  also what `record` and its tests need (Debian, root):
#                                         BCC from Debian (python3-bpfcc; the PyPI "bcc" is an
#                                         unrelated lattice library), kernel headers, bpftrace,
#                                         perf, gcc, chromium (the HTML report test), tmux
#                                         (the `top` test reads its screen in a tmux pane);
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
    chromium tmux \
    qemu-system-x86 linux-image-amd64 busybox-static kmod patch
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,lab]'

# `sudo kmemtrace ...` (README) needs the entry point on sudo's secure_path, not only in
# .venv/bin: link it into /usr/local/bin. An existing link to another checkout's venv is
# replaced; a real file there (another install) is left alone, with a note.
link_dir="${KMEMTRACE_LINK_DIR:-/usr/local/bin}"
target="$PWD/.venv/bin/kmemtrace"
if [[ -w "$link_dir" ]]; then
  if [[ -e "$link_dir/kmemtrace" && ! -L "$link_dir/kmemtrace" ]]; then
    echo "setup: $link_dir/kmemtrace exists and is not a link; left alone (use $target)" >&2
  else
    ln -sfn "$target" "$link_dir/kmemtrace"
    echo "setup: $link_dir/kmemtrace -> $target"
  fi
else
  echo "setup: cannot write $link_dir; run kmemtrace as $target (or rerun setup as root)" >&2
fi

# Build the compiled replay engine now, not on the user's first replay (numba caches it per
# user and per source version; another user, or a changed model, compiles once more and
# says so). A replay of the smallest committed fixture compiles every strategy's path.
echo "setup: compiling the replay engine once (~25 s)"
.venv/bin/kmemtrace replay fixtures/steady --format text > /dev/null
