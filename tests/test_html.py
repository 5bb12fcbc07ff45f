"""``kmemtrace report``: one self-contained HTML file that a real browser renders.

The browser test needs Debian's chromium (scripts/setup.sh --kernel-tools installs it);
without it the test fails rather than skips, so CI cannot pass while never rendering.
"""

import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib.image import imread

from kmemtrace.metrics import metric_fields
from kmemtrace.report.plots import CHARTS
from kmemtrace.report.text import GROUPS
from kmemtrace.strategies import REGISTRY

FIXTURE = Path(__file__).parent.parent / "fixtures" / "default"
KMEMTRACE = Path(sys.executable).with_name("kmemtrace")


class Page(HTMLParser):
    """Collects the strategy rows of each group table, image sources and external links."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.images: list[str] = []
        self.external: list[str] = []
        self._group = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "data-group" in a:
            self._group = a["data-group"]
            self.rows[self._group] = []
        if tag == "tr" and "data-strategy" in a:
            self.rows[self._group].append(a["data-strategy"])
        if tag == "img":
            self.images.append(a["src"])
        for key in ("href", "src"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    done = subprocess.run([str(KMEMTRACE), "report", str(FIXTURE), "-o", str(out),
                           "--samples", "100"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def test_html_holds_every_strategy_and_embeds_its_charts(report):
    page = Page()
    text = report.read_text(encoding="utf-8")
    page.feed(text)
    assert list(page.rows) == list(GROUPS)
    for group, rows in page.rows.items():
        assert rows == list(REGISTRY), group
    assert len(page.images) == len(CHARTS)
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert page.external == []
    for name in metric_fields():
        assert f">{name}<" in text.replace("<wbr>", ""), name
    assert "Assumptions" in text and "Attach plan" in text


def test_chromium_renders_the_report(report, tmp_path):
    browser = shutil.which("chromium")
    assert browser, "chromium is missing: apt-get install chromium (scripts/setup.sh " \
                    "--kernel-tools)"
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1200,2000", report.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    # A rendered page has text and charts: many distinct shades, not one background.
    assert pixels.std() > 0.05
    assert (pixels.reshape(-1, 3) < 0.5).any(axis=1).mean() > 0.005


_OVERFLOW_PROBE = ('<script>document.body.setAttribute("data-overflow", '
                   '[...document.querySelectorAll(".scroll")].filter('
                   'd => d.scrollWidth > d.clientWidth).length)</script></body>')


def test_no_table_scrolls_in_a_1400px_window(report, tmp_path):
    """The page used to cap at 70em: four of the tables scrolled sideways at 1400 px."""
    browser = shutil.which("chromium")
    assert browser, "chromium is missing: apt-get install chromium"
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", _OVERFLOW_PROBE),
                     encoding="utf-8")
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2000", "--dump-dom",
         probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert 'data-overflow="0"' in done.stdout, done.stderr[-2000:]


def test_title_names_the_workload_and_the_page_holds_the_validation(report):
    text = report.read_text(encoding="utf-8")
    assert "<title>kmemtrace report: container-churn (synth, seed 1)</title>" in text
    assert "<h2>Validation</h2>" in text and "no SLAB_SAMPLE events" in text


def test_a_recording_is_titled_by_its_command():
    from kmemtrace.cli.report import trace_title

    meta = {"source": "record", "command": ["kmemtrace", "record", "-o", "t", "--in-memcg",
                                            "--", "make", "-j2"],
            "record": {"cgroup": None}, "workload": None}
    assert trace_title(meta) == "kmemtrace record -o t --in-memcg -- make -j2 (record)"
    meta["record"]["cgroup"] = "/sys/fs/cgroup/memory/ci"
    assert trace_title(meta).endswith(" in /sys/fs/cgroup/memory/ci (record)")
