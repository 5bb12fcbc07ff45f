"""Which way? The 2014 RFC's four ways (plus its baseline and today's objcg) on data.

``python -m analyses.which_way`` records real workloads in fresh memcgs (as root), adds
synthetic and fixture traces, replays every strategy while sweeping the parameters that
decide the outcome, checks the model against what the kernel community published, and
writes ``REPORT.md`` with PNG plots. Kept import-light: ``work`` (run inside memcgs by a
recording) imports this package too.
"""
