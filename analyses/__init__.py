"""Reproducible studies over kmemtrace traces; each sub-package answers one question.

Run a study from the repository root, e.g. ``python -m analyses.which_way``.
"""
