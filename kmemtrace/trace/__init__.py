"""The trace format: schema, writer, reader, meta."""

from kmemtrace.trace.reader import TraceReader, open_trace
from kmemtrace.trace.schema import COLUMNS, FORMAT_VERSION, EventKind
from kmemtrace.trace.writer import TraceWriter

__all__ = ["COLUMNS", "FORMAT_VERSION", "EventKind", "TraceReader", "TraceWriter", "open_trace"]
