"""``kmemtrace lab``: record on other kernels (Debian's stock one, or a patched build) in a VM.

The host this project runs on lacks kprobes and fentry, so the recorder's paths for them,
and for the tracepoints lab/patches adds, can only run in a guest. virtme-ng boots the
kernel under QEMU with the host's root filesystem shared in, so the guest runs this very
checkout; TCG emulation makes guest timings 19-53x slower than the host's, which every
trace recorded here says in its meta.
"""

from kmemtrace.errors import KmemtraceError


class LabError(KmemtraceError):
    """The VM lab cannot do what was asked: a missing tool, image, patch or a failed boot."""

    exit_code = 6


class GuestError(LabError):
    """The guest failed (no boot, timeout, crash); ``tail`` holds the console's last lines."""

    def __init__(self, message: str, console, tail: list[str]):
        super().__init__(message, tip=f"guest console saved to {console}")
        self.console = console
        self.tail = tail
