"""Errors the CLI turns into one line and an exit code.

The core raises these and never prints; ``kmemtrace.cli`` catches them once. Each class
carries its exit code so that scripts (and CI) can tell a bad trace from a kernel that
lacks a feature.
"""


class KmemtraceError(Exception):
    """Base class: a user-facing failure with a one-line message and an optional tip."""

    exit_code = 1

    def __init__(self, message: str, tip: str | None = None):
        super().__init__(message)
        self.tip = tip


class UsageError(KmemtraceError):
    """Bad command-line input: unknown strategy or parameter, malformed value."""

    exit_code = 2


class TraceFormatError(KmemtraceError):
    """A trace that cannot be read: missing, damaged part, unknown format_version."""

    exit_code = 3


class KernelSupportError(KmemtraceError):
    """The running kernel (or this machine) lacks something recording needs."""

    exit_code = 4


class PermissionNeeded(KmemtraceError):
    """Recording needs root (CAP_BPF/CAP_PERFMON and cgroup writes)."""

    exit_code = 5
