"""The fleet's results on disk: one Parquet table, one file per trace x strategy.

``DIR/results/`` is a Parquet dataset that pandas (``pd.read_parquet(DIR / "results")``)
and DuckDB (``read_parquet('DIR/results/*.parquet')``) read as one table, long format: one
row per trace x strategy x metric (``kind = 'metric'``), and one per time-series point
(``kind = 'series'``, with ``t_s``). Each file is named after the trace's digest and the
run's configuration (strategy, parameters, era, samples), and is written by rename, so a
file that exists is complete: a rerun, or a run after a crash, skips exactly the work that
was done. ``DIR/fleet.json`` says what the last run covered and which traces failed.
"""

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kmemtrace.errors import KmemtraceError, UsageError

RESULTS_DIR = "results"
MANIFEST = "fleet.json"
MANIFEST_FORMAT = "kmemtrace-fleet"
MANIFEST_VERSION = 1

SCHEMA = pa.schema([
    ("digest", pa.string()),  # SHA-256 of the trace (kmemtrace.trace.digest)
    ("trace", pa.string()),  # the trace directory's name: the unit of the distributions
    ("path", pa.string()),  # where it was read from
    ("host", pa.string()),  # meta.json's host (synthetic traces: the generating machine)
    ("strategy", pa.string()),
    ("params", pa.string()),  # the strategy's resolved parameters, JSON
    ("era", pa.string()),
    ("run_key", pa.string()),  # strategy + params + era + samples, hashed
    ("kind", pa.string()),  # 'metric' or 'series'
    ("metric", pa.string()),  # a StrategyMetrics field, or a series name
    ("unit", pa.string()),
    ("t_s", pa.float64()),  # series: seconds since the trace's start; metrics: null
    ("value", pa.float64()),  # null: the metric does not apply (e.g. no destroys)
])


@dataclass(frozen=True)
class RunSpec:
    """One strategy with its parameters in one era: what a task replays a trace under."""

    strategy: str
    params: dict
    era: str
    samples: int

    @property
    def key(self) -> str:
        text = json.dumps([self.strategy, self.params, self.era, self.samples], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def result_name(digest: str, spec: RunSpec) -> str:
    return f"{digest}-{spec.strategy}-{spec.key}.parquet"


@dataclass
class TraceOutcome:
    """What happened to one trace in a fleet run."""

    path: str
    digest: str | None = None
    status: str = "pending"  # 'done' (this run), 'skipped' (done before), 'failed'
    error: str | None = None
    tasks: int = 0  # tasks this run replayed for it


@dataclass
class Manifest:
    """``fleet.json``: the last run's configuration and every trace's outcome."""

    era: str
    samples: int
    specs: list[RunSpec]
    traces: list[TraceOutcome]
    scheduler: str
    workers: int
    wall_s: float = 0.0
    format: str = MANIFEST_FORMAT
    version: int = MANIFEST_VERSION

    @property
    def failed(self) -> list[TraceOutcome]:
        return [t for t in self.traces if t.status == "failed"]


class ResultStore:
    """The output directory: result files in, the table and the manifest out."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.results = self.root / RESULTS_DIR

    def create(self) -> None:
        try:
            self.root.mkdir(exist_ok=True)
            self.results.mkdir(exist_ok=True)
        except OSError as exc:
            raise KmemtraceError(f"{self.root}: could not create ({exc.strerror or exc})") \
                from None

    def has(self, digest: str, spec: RunSpec) -> bool:
        return (self.results / result_name(digest, spec)).exists()

    def write(self, digest: str, spec: RunSpec, rows: pd.DataFrame) -> None:
        """Write one task's rows atomically (temporary file, then rename)."""
        final = self.results / result_name(digest, spec)
        tmp = final.with_name(f".{final.name}.tmp")
        try:
            pq.write_table(pa.Table.from_pandas(rows, schema=SCHEMA, preserve_index=False),
                           tmp)
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise KmemtraceError(f"{final}: could not write ({exc.strerror or exc})") from None

    def write_manifest(self, manifest: Manifest) -> None:
        data = asdict(manifest)
        path = self.root / MANIFEST
        tmp = path.with_name(f".{MANIFEST}.tmp")
        try:
            tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            raise KmemtraceError(f"{path}: could not write ({exc.strerror or exc})") from None

    def manifest(self) -> Manifest:
        path = self.root / MANIFEST
        if not path.is_file():
            raise UsageError(f"{self.root}: no {MANIFEST}; not the output of "
                             "`kmemtrace fleet replay`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != MANIFEST_FORMAT or data.get("version") != MANIFEST_VERSION:
                raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}")
            data["specs"] = [RunSpec(**s) for s in data["specs"]]
            data["traces"] = [TraceOutcome(**t) for t in data["traces"]]
            return Manifest(**data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise UsageError(f"{path}: damaged ({exc}); rerun `kmemtrace fleet replay`") \
                from None

    def table(self, manifest: Manifest) -> pd.DataFrame:
        """The rows of the manifest's traces and run specs (older runs' rows left out)."""
        digests = [t.digest for t in manifest.traces if t.status in ("done", "skipped")]
        files = [self.results / result_name(d, s) for d in digests for s in manifest.specs]
        missing = [f for f in files if not f.exists()]
        if missing:
            raise UsageError(f"{missing[0]}: listed by {MANIFEST} but missing; rerun "
                             "`kmemtrace fleet replay` into this directory")
        if not files:
            return SCHEMA.empty_table().to_pandas()
        try:
            return pa.concat_tables(pq.read_table(f, schema=SCHEMA) for f in files).to_pandas()
        except (pa.ArrowException, OSError) as exc:
            raise UsageError(f"{self.results}: damaged result file "
                             f"({str(exc).splitlines()[0]}); delete it and rerun") from None
