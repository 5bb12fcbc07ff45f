"""Reports: the same comparison as a rich table, 72-column text and JSON.

Everything here starts from :class:`~kmemtrace.report.comparison.Comparison`, which holds
metrics objects and the trace's self-description (meta.json), never events. Reports
return renderables or strings; only ``kmemtrace.cli`` prints, and nothing here imports
typer.
"""
