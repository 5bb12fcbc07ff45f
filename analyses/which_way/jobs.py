"""The study's three workload families: real jobs whose objects live as long as the kernel
keeps them, not as long as a script says. Each family repeats its unit of real work
(a file job, a container, a service life) until the recording is at least
:data:`MIN_RUN_S` long: the length comes from the work, and no sleep sets a lifetime.

* **classic**: round after round, a job in a fresh memcg writes and reads a few thousand
  files on ext4 (a loop device, a new directory per job) and on tmpfs (one scratch
  directory each job rewrites), exits; the memcg is removed; its dentries and inodes stay
  cached. The parent has a limit, so later jobs' page cache reclaims the earlier ones',
  and every :data:`PRESSURE_EVERY` rounds a memory hog in a sibling memcg (variant
  ``hog``: memcg reclaim, which shrinks the parent's lists, where the dead children's
  entries were reparented) or ``drop_caches`` (variant ``drop``) frees more of them.
* **churn**: containers (memcgs) one after another and three at once, each running a real
  job on local resources — ``git clone`` of this repository, ``pip install`` of a locally
  built wheel into a fresh venv, a ``gcc`` build, a loopback HTTP server answering a
  bounded number of requests — and removed when the job ends. Their parent has a limit,
  so the page cache the jobs leave behind brings reclaim of its own.
* **service**: one long-lived HTTP service, restarted in a fresh memcg after a bounded
  number of requests, the old memcg removed each time. It serves a site with large files
  and writes an access log, under a parent limit below what it reads: each life reclaims
  the page cache of the lives before it (memcg reclaim, recorded as PRESSURE rows).

The only wait is the service's readiness poll; no object's free is timed by the driver.
Every job's output stays on disk until the recording has stopped.
"""

import base64
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from contextlib import contextmanager, suppress
from dataclasses import asdict
from pathlib import Path

from analyses.which_way.record import (
    MEMCG_ROOT,
    PREFIX,
    REPO,
    Recorded,
    Recording,
    enter,
    loadavg,
    log,
    rmdir,
)
from analyses.which_way.sweep import TraceSpec

PY = sys.executable
MIN_RUN_S = 60.0  # every family repeats its work until its recording is this long
FILES = 3000
PRESSURE_EVERY = 3  # classic: the hog (or drop_caches) after every third job
HOG_LIMIT = 96 << 20  # the classic parent's limit: the hog's page cache overflows it
CHURN_LIMIT = 256 << 20
SERVICE_LIMIT = 64 << 20  # below the site's large files plus the service's own memory
BIG_FILE = 384 << 20
# The classic jobs' ext4 image: each job leaves FILES files and two directories behind, so
# the inode count bounds the jobs of one run. 262 144 inodes ran out at job 87 of a
# drop_caches run on a quiet machine (drop_caches makes rounds fast); a million hold ~349
# jobs, and the loop stops there rather than fail if a machine is faster still.
EXT4_INODES = 1 << 20
EXT4_BYTES = 8 << 30  # ~4 KiB a file: 349 jobs x 3 000 files ~ 4.3 GB at most
CLASSIC_MAX_JOBS = EXT4_INODES // (FILES + 2) - 1
SITE_FILES = 300
SITE_LARGE = 48  # 2 MiB files, 96 MiB: more than the service limit, so every life reclaims


def _run(cmd, memcg: Path | None = None, **kw) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   preexec_fn=enter(memcg) if memcg else None, **kw)


@contextmanager
def _memcg(name: str, limit: int | None = None):
    """A top-level memcg for one recording; removed (with any leftover child) afterwards."""
    path = MEMCG_ROOT / f"{PREFIX}-{name}-{os.getpid()}"
    path.mkdir()
    if limit:
        (path / "memory.limit_in_bytes").write_text(str(limit))
    try:
        yield path
    finally:
        for child in sorted(p for p in path.iterdir() if p.is_dir()):
            with suppress(OSError):
                rmdir(child)
        rmdir(path)


@contextmanager
def _mounts(work: Path):
    """ext4 on a loop device and a tmpfs, under ``work``; unmounted afterwards."""
    img, ext4, tmpfs = work / "ext4.img", work / "ext4", work / "tmpfs"
    for d in (ext4, tmpfs):
        d.mkdir(parents=True, exist_ok=True)
    with open(img, "wb") as fh:
        fh.truncate(EXT4_BYTES)  # sparse: only what the jobs write takes disk space
    _run(["mkfs.ext4", "-q", "-F", "-N", str(EXT4_INODES), str(img)])
    _run(["mount", "-o", "loop", str(img), str(ext4)])
    try:
        _run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(tmpfs)])
        try:
            yield ext4, tmpfs
        finally:
            _run(["umount", str(tmpfs)])
    finally:
        _run(["umount", str(ext4)])
        img.unlink()


FILE_JOB = """
import os, sys
for root in sys.argv[3:]:
    d = os.path.join(root, sys.argv[2]); os.makedirs(d, exist_ok=True)
    for i in range(int(sys.argv[1])):
        with open(os.path.join(d, f"f{i}"), "w") as fh:
            fh.write("x" * (i % 512))
    for name in os.listdir(d):
        with open(os.path.join(d, name)) as fh:
            fh.read()
"""


def _evict(path: Path) -> None:
    """Drop ``path`` from the page cache, so that the hog's reads are charged to the hog."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # DONTNEED skips dirty pages: a file just written must be clean first
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _elapsed(t0: float, rounds: int, at_least: int) -> bool:
    """Done: at least ``at_least`` rounds, and :data:`MIN_RUN_S` since ``t0``."""
    return rounds >= at_least and time.monotonic() - t0 >= MIN_RUN_S


def _pressure(parent: Path, k: int, variant: str, big: Path, rec: Recorded) -> None:
    hog = parent / f"hog{k}"
    hog.mkdir()
    if variant == "hog":
        for _ in range(2):
            _run(["cat", str(big)], hog)
    else:
        _run(["sh", "-c", "echo 2 > /proc/sys/vm/drop_caches"], hog)
    rec.rmdir_s.append(rmdir(hog))


def classic(out: Path, work: Path, run: int, variant: str, min_rounds: int = 6) -> Recorded:
    """The dying memcg of the RFC's era, with the pressure that finally frees its caches."""
    work.mkdir(parents=True, exist_ok=True)
    big = work / "big"
    if variant == "hog":
        with open(big, "wb") as fh:
            for _ in range(BIG_FILE >> 20):
                fh.write(os.urandom(1 << 20))
        _evict(big)
    rec = Recorded("classic", run, out, variant)
    with _mounts(work) as (ext4, tmpfs), _memcg(f"classic{run}", HOG_LIMIT) as parent:
        log(f"recording classic run {run} ({variant}) -> {out}")
        with Recording(out):
            t0, k = time.monotonic(), 0
            while not _elapsed(t0, k, min_rounds) and k < CLASSIC_MAX_JOBS:
                job = parent / f"job{k}"
                job.mkdir()
                _run([PY, "-c", FILE_JOB, str(FILES), f"job{k}", str(ext4)], job)
                _run([PY, "-c", FILE_JOB, str(FILES), "scratch", str(tmpfs)], job)
                rec.rmdir_s.append(rmdir(job))
                k += 1
                if k % PRESSURE_EVERY == 0:
                    _pressure(parent, k, variant, big, rec)
            if k == CLASSIC_MAX_JOBS:
                log(f"classic run {run}: stopped at {k} jobs, all the ext4 image's inodes hold")
            _pressure(parent, k, variant, big, rec)
            rec.load = loadavg()
    shutil.rmtree(work, ignore_errors=True)
    return rec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"http.server on port {port} did not come up")


def _serve(memcg: Path, site: Path, requests: int, rng: random.Random,
           log_to: Path | None = None) -> None:
    """A loopback HTTP server in ``memcg`` answers ``requests`` GETs, then stops; its
    access log goes to ``log_to`` (appended) when given."""
    port = _free_port()
    with open(log_to or os.devnull, "ab") as access_log:
        server = subprocess.Popen(
            [PY, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(site),
             str(port)],
            stdout=subprocess.DEVNULL, stderr=access_log, preexec_fn=enter(memcg))
    try:
        _wait_port(port, server)
        names = sorted(p.name for p in site.iterdir())
        for _ in range(requests):
            url = f"http://127.0.0.1:{port}/{rng.choice(names)}"
            with urllib.request.urlopen(url, timeout=10) as resp:
                resp.read()
    finally:
        server.terminate()
        server.wait(timeout=30)


def _site(path: Path, n: int = SITE_FILES, large: int = 0) -> Path:
    """``n`` small pages and ``large`` 2 MiB files, out of the page cache (so that the
    service's reads are charged to the service, not to this driver)."""
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (path / f"p{i}.html").write_text("<p>" + "y" * (64 * (i % 64)) + "</p>\n")
    for i in range(large):
        big = path / f"large{i}.bin"
        big.write_bytes(os.urandom(2 << 20))
        _evict(big)
    return path


def build_wheel(work: Path, modules: int = 200) -> Path:
    """A small pure-Python wheel, written here (a wheel is a zip with a dist-info; no
    network, no build backend needed). Its ``modules`` files make the install create a
    few hundred files, as a real package's would."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / "kmt_ww_demo-1.0-py3-none-any.whl"
    info = "kmt_ww_demo-1.0.dist-info"
    files = {"kmt_ww_demo/__init__.py": ""}
    files |= {f"kmt_ww_demo/m{i}.py": f"def f(x):\n    return x * {i}\n"
              for i in range(modules)}
    files[f"{info}/METADATA"] = "Metadata-Version: 2.1\nName: kmt-ww-demo\nVersion: 1.0\n"
    files[f"{info}/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: which_way\n"
                              "Root-Is-Purelib: true\nTag: py3-none-any\n")
    record = [f"{name},sha256={_digest(text)},{len(text.encode())}"
              for name, text in files.items()]
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def _digest(text: str) -> str:
    raw = hashlib.sha256(text.encode()).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _job(kind: str, memcg: Path, where: Path, wheel: Path, site: Path,
         rng: random.Random) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if kind == "git":
        _run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(where / "repo")], memcg)
    elif kind == "pip":
        _run([PY, "-m", "venv", "--without-pip", str(where / "venv")], memcg)
        _run([PY, "-m", "pip", "--python", str(where / "venv" / "bin" / "python"), "install",
              "-q", "--no-index", "--no-deps", str(wheel)], memcg)
    elif kind == "gcc":
        for opt in ("-O0", "-O2"):
            _run(["gcc", opt, "-c", str(REPO / "benchmarks" / "slab_hammer.c"), "-o",
                  str(where / f"hammer{opt}.o")], memcg)
    else:
        _serve(memcg, site, 200, rng)


JOBS = ("git", "pip", "gcc", "http")


def churn(out: Path, work: Path, run: int, wheel: Path, sequential: int = 24,
          batches: int = 12, width: int = 3) -> Recorded:
    """Containers one after another, then ``batches`` of ``width`` at once, and more
    batches until the recording is :data:`MIN_RUN_S` long."""
    work.mkdir(parents=True, exist_ok=True)
    site = _site(work / "site")
    rng = random.Random(run)
    rec = Recorded("churn", run, out)
    with _memcg(f"churn{run}", CHURN_LIMIT) as parent:
        log(f"recording churn run {run} -> {out}")
        with Recording(out):
            t0, n = time.monotonic(), 0
            for _ in range(sequential):
                c = parent / f"c{n}"
                c.mkdir()
                _job(JOBS[n % len(JOBS)], c, work / f"c{n}", wheel, site, rng)
                rec.rmdir_s.append(rmdir(c))
                n += 1
            done = 0
            while not _elapsed(t0, done, batches):
                group = [parent / f"c{n + i}" for i in range(width)]
                procs = []
                for i, c in enumerate(group):
                    c.mkdir()
                    procs.append(subprocess.Popen(
                        [PY, "-m", "analyses.which_way.jobs", JOBS[(n + i) % len(JOBS)],
                         str(c), str(work / f"c{n + i}"), str(wheel), str(site)], cwd=REPO))
                for p, c in zip(procs, group, strict=True):
                    if p.wait() != 0:
                        raise RuntimeError(f"job in {c.name} failed")
                    rec.rmdir_s.append(rmdir(c))
                n += width
                done += 1
            rec.load = loadavg()
    shutil.rmtree(work, ignore_errors=True)
    return rec


def service(out: Path, work: Path, run: int, restarts: int = 10,
            requests: int = 1500) -> Recorded:
    """One service, a fresh memcg per restart, each life ``requests`` requests long; at
    least ``restarts`` lives, and more until the recording is :data:`MIN_RUN_S` long."""
    work.mkdir(parents=True, exist_ok=True)
    site = _site(work / "site", large=SITE_LARGE)
    rng = random.Random(run)
    rec = Recorded("service", run, out)
    with _memcg(f"service{run}", SERVICE_LIMIT) as parent:
        log(f"recording service run {run} -> {out}")
        with Recording(out):
            t0, k = time.monotonic(), 0
            while not _elapsed(t0, k, restarts):
                life = parent / f"life{k}"
                life.mkdir()
                _serve(life, site, requests, rng, work / "access.log")
                rec.rmdir_s.append(rmdir(life))
                k += 1
            rec.load = loadavg()
    shutil.rmtree(work, ignore_errors=True)
    return rec


CLASSIC_VARIANTS = ("hog", "drop")


def record_all(work: Path, runs: int) -> list[TraceSpec]:
    """Every family ``runs`` times, interleaved (so load drifts hit all alike); the
    manifest ``recordings.json`` lets ``--traces`` analyse them again. It is rewritten
    after every recording, so an interrupted study can still be analysed."""
    wheel = build_wheel(work / "wheel")
    specs = []
    for run in range(runs):
        variant = CLASSIC_VARIANTS[run % len(CLASSIC_VARIANTS)]
        for family in ("classic", "churn", "service"):
            out, scratch = work / f"{family}-{run}", work / f"w-{family}-{run}"
            if family == "classic":
                rec = classic(out, scratch, run, variant)
            elif family == "churn":
                rec = churn(out, scratch, run, wheel)
            else:
                rec = service(out, scratch, run)
            specs.append(TraceSpec(rec.group, "real", rec.run, rec.path, rec.variant,
                                   rec.rmdir_s, rec.load))
            manifest = [asdict(s) | {"path": s.path.name} for s in specs]
            (work / "recordings.json").write_text(json.dumps(manifest, indent=1))
    return specs


def main(argv: list[str]) -> None:
    """One churn job, for the containers that run at once: KIND MEMCG WHERE WHEEL SITE."""
    kind, memcg, where, wheel, site = argv
    _job(kind, Path(memcg), Path(where), Path(wheel), Path(site), random.Random(where))


if __name__ == "__main__":
    main(sys.argv[1:])
