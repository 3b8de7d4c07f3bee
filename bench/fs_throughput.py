"""File system throughput: WebHDFS write and read of a 1 GiB file beside the local disk's own rate.

Starts a local cluster of ``--nodes`` daemons (``cortex_rm.local_cluster``) in a
temporary directory and measures, in the file system the nodes keep their blocks
in (the data file lives in that same directory):

1. the disk's own rate: ``--size-mib`` MiB of random-ish data written with
   ``os.write`` in 1 MiB pieces and ``fsync``ed (the time to the page cache and the
   fsync are shown apart), then read back in 1 MiB pieces, cold (after
   ``echo 3 > /proc/sys/vm/drop_caches``, which needs root; the output says when
   that was not possible) and warm;
2. WebHDFS CREATE of that file, streamed from it in 1 MiB pieces, with replication
   1 and with the NameNode's default (3): the 307 from the RM's web port, then the
   bytes to the node it names, timed until that node's 201, which it sends once
   the blocks are stored, copied to the other nodes of the pipeline and committed;
3. WebHDFS OPEN of each file, cold and warm, streamed in 1 MiB pieces and counted, as
   the disk read counts them; then read once more, untimed, and checked against the
   data's SHA-256 (hashing 1 GiB costs this client as long as the read itself).

The disk's figures are the median of ``DISK_RUNS`` runs: this VM's disk varies.  With
replication R > 1 every node of the pipeline writes the whole file to this same disk, so
the disk's rate for that write is measured as R writers at once (each its own copy, each
fsynced; the rate is one copy's size over the time all R took), and the replicated write
is judged against that: on one machine the disk, not the file system, sets its ceiling.

The client is ``requests`` for the NameNode's step and ``http.client`` for the
data, so the time to send the last byte and the time the node then takes to
answer are measured apart (a node stores and forwards the body as it arrives, so
what is left after the last byte is the last block's copies and the commit).
Rates are MiB/s (2^20 bytes per second).  Target: the file system at least
0.5 x the disk: writes against the fsynced write, cold reads against the cold
read (warm reads are shown beside the warm local read, which is the page cache's
rate, not the disk's; without root every read is warm and judged as such).  The
nodes do not fsync their blocks, so a write's figure is the price of reaching
their page caches.  For each phase it also shows where the CPU went, from
/proc: the bench process, and each node's reactor (the daemon's main thread)
and its other threads (the DataNode's workers); and the bytes each node wrote
to files (``write_bytes``: a body buffered in a temporary file counts too).

Usage: .venv/bin/python bench/fs_throughput.py [--size-mib 1024] [--nodes 3] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cortex_rm import local_cluster  # noqa: E402

MIB = 1 << 20
DISK_RUNS = 3
POOL_BYTES = 32 * MIB
POOL_STRIDE = 1_000_003  # prime, coprime with the pool's 31 MiB of window starts: every window differs
TARGET_RATIO = 0.5
PROGRESS_EVERY_S = 10.0
ANSWER_TIMEOUT_S = 900.0  # a node answers a CREATE only after storing and copying every block
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The cluster or the file system did not do what the bench needs; the message says what."""


def say(message: str) -> None:
    print(message, flush=True)


# -- the data: random-ish, made once, no 1 MiB piece equal to another


def randomish_pieces(pool: bytes, count: int) -> Iterator[memoryview]:
    """``count`` distinct 1 MiB windows of ``pool`` (random bytes), so no block repeats another."""
    view = memoryview(pool)
    starts = len(pool) - MIB
    for i in range(count):
        start = (i * POOL_STRIDE) % starts
        yield view[start : start + MIB]


# -- where the CPU and the file writes go, from /proc


def _cpu_seconds(stat_path: str) -> float:
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _file_bytes_written(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class NodeCost:
    reactor_s: float  # the daemon's main thread: the reactor (HTTP parsing, request bodies, responses)
    others_s: float  # every other thread, those that have ended included: the DataNode's workers
    file_bytes: int  # bytes the process dirtied in files (/proc/<pid>/io write_bytes)


@dataclass(frozen=True)
class CostSample:
    """Cumulative CPU seconds and file writes of the bench process and of each node, at one moment."""

    wall_s: float
    bench_s: float
    nodes: dict[str, NodeCost]

    @staticmethod
    def take(nodes: Sequence[local_cluster.LocalNode]) -> CostSample:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        costs = {}
        for node in nodes:
            total = _cpu_seconds(f"/proc/{node.pid}/stat")
            reactor = _cpu_seconds(f"/proc/{node.pid}/task/{node.pid}/stat")
            costs[node.name] = NodeCost(reactor, total - reactor, _file_bytes_written(node.pid))
        return CostSample(time.perf_counter(), usage.ru_utime + usage.ru_stime, costs)

    def since(self, before: CostSample) -> str:
        """Two lines: the CPU each process used and the bytes each node dirtied in files since ``before``."""
        wall = self.wall_s - before.wall_s
        cpu = [f"bench {self.bench_s - before.bench_s:.1f}"]
        files = []
        for name, now in self.nodes.items():
            then = before.nodes[name]
            reactor, others = max(0.0, now.reactor_s - then.reactor_s), max(0.0, now.others_s - then.others_s)
            cpu.append(f"{name} reactor {reactor:.1f} + workers {others:.1f}")
            files.append(f"{name} {(now.file_bytes - then.file_bytes) / MIB:,.0f} MiB")
        return (
            f"    CPU s in {wall:.1f} s of wall time (2 cores): {'; '.join(cpu)}\n"
            f"    file bytes written: {', '.join(files)}"
        )


# -- progress while something long runs


class Progress:
    """Prints ``what``'s progress at most every ``PROGRESS_EVERY_S``."""

    def __init__(self, what: str, total: int) -> None:
        self.what = what
        self.total = total
        self.started = time.perf_counter()
        self._next = self.started + PROGRESS_EVERY_S

    def tick(self, done: int) -> None:
        now = time.perf_counter()
        if now >= self._next:
            self._next = now + PROGRESS_EVERY_S
            say(f"    ... {self.what}: {done / MIB:,.0f} of {self.total / MIB:,.0f} MiB after {now - self.started:.0f} s")


def stored_mib(nodes: Sequence[local_cluster.LocalNode]) -> str:
    """Each node's block files (complete and being written), in MiB: the progress of a write's second half."""
    parts = []
    for node in nodes:
        root = Path(node.directory) / "dfs-data"
        total = 0
        for path in root.rglob("blk_*"):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
        parts.append(f"{node.name} {total / MIB:,.0f}")
    return ", ".join(parts)


def wait_with_progress(work: Callable[[], http.client.HTTPResponse], what: str, status: Callable[[], str]) -> http.client.HTTPResponse:
    """Run blocking ``work`` on a thread, saying every ``PROGRESS_EVERY_S`` that we still wait for ``what``."""
    result: list[http.client.HTTPResponse] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as e:  # noqa: BLE001 (handed to the waiting thread, which raises it)
            error.append(e)

    thread = threading.Thread(target=run, name="wait", daemon=True)
    started = time.perf_counter()
    thread.start()
    while thread.is_alive():
        thread.join(PROGRESS_EVERY_S)
        if thread.is_alive():
            say(f"    ... waiting for {what} ({time.perf_counter() - started:.0f} s); {status()}")
    if error:
        raise error[0]
    return result[0]


# -- the cluster


def wait_for_data_nodes(rm_web: str, count: int, timeout_s: float = 60.0) -> None:
    """Until a probe file written with replication ``count`` has ``count`` holders (every DataNode has reported)."""
    say(f"waiting for {count} DataNodes to report to the NameNode "
        f"(a probe file written with replication {count} until it has {count} holders) ...")
    base = f"http://{rm_web}/webhdfs/v1/.probe"
    deadline = time.monotonic() + timeout_s
    seen = "no answer yet"
    while True:
        try:
            step = requests.put(base, params={"op": "CREATE", **AUTH, "overwrite": "true",
                                              "replication": str(count)}, allow_redirects=False, timeout=30)
            if step.status_code == 307:
                stored = requests.put(step.headers["Location"], data=b"x", timeout=30)
                if stored.status_code == 201:
                    located = requests.get(base, params={"op": "GETFILEBLOCKLOCATIONS", **AUTH}, timeout=30)
                    located.raise_for_status()
                    hosts = located.json()["BlockLocations"]["BlockLocation"][0]["hosts"]
                    requests.delete(base, params={"op": "DELETE", **AUTH}, timeout=30)
                    if len(hosts) == count:
                        return
                    seen = f"holders {hosts}"
                else:
                    seen = f"the node answered {stored.status_code}: {stored.text[:200]}"
            else:
                seen = f"the NameNode answered {step.status_code}: {step.text[:200]}"
        except (requests.RequestException, KeyError, IndexError, ValueError) as e:
            seen = str(e)
        if time.monotonic() > deadline:
            raise BenchError(f"{count} DataNodes did not report within {timeout_s:.0f} s; last: {seen}")
        time.sleep(0.5)


def node_named_by(location: str, nodes: Sequence[local_cluster.LocalNode]) -> str:
    where = urlsplit(location).netloc
    return next((n.name for n in nodes if n.nm_webapp == where), where)


def drop_page_cache() -> bool:
    """Write back and drop the page cache (root only); whether it was dropped."""
    os.sync()
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


# -- measurements


@dataclass(frozen=True)
class Transfer:
    """``size`` bytes moved in ``seconds``, with what else was seen on the way."""

    size: int
    seconds: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Figure:
    """A named transfer, and the name of the disk figure its ratio is taken against (if any)."""

    what: str
    transfer: Transfer
    compare_to: str | None = None
    judged: bool = True  # whether the target applies (not to a warm read: that is the page cache, not the disk)

    @property
    def mib_s(self) -> float:
        return self.transfer.size / MIB / self.transfer.seconds


def disk_write(path: Path, pool: bytes, size_mib: int) -> Transfer:
    """Write ``size_mib`` pieces with os.write and fsync (the fsync's own time is in the notes)."""
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for piece in randomish_pieces(pool, size_mib):
            written = 0
            while written < len(piece):
                written += os.write(fd, piece[written:])
        buffered = time.perf_counter()
        os.fsync(fd)
    finally:
        os.close(fd)
    done = time.perf_counter()
    note = (f"{buffered - started:.2f} s to the page cache ({size_mib / (buffered - started):,.0f} MiB/s), "
            f"{done - buffered:.2f} s fsync")
    return Transfer(size_mib * MIB, done - started, (note,))


def disk_writes_at_once(paths: Sequence[Path], pool: bytes, size_mib: int) -> Transfer:
    """``disk_write`` of ``size_mib`` to each of ``paths`` from a thread each, all at once: one
    copy's size over the time the slowest took (os.write and fsync release the GIL)."""
    transfers: list[Transfer] = []
    errors: list[BaseException] = []

    def write(path: Path) -> None:
        try:
            transfers.append(disk_write(path, pool, size_mib))
        except BaseException as e:  # noqa: BLE001 (raised below, in the measuring thread)
            errors.append(e)

    threads = [threading.Thread(target=write, args=(path,), name=f"writer-{i}") for i, path in enumerate(paths)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for path in paths[1:]:
        path.unlink(missing_ok=True)
    if errors:
        raise errors[0]
    each = ", ".join(f"{t.seconds:.2f}" for t in sorted(transfers, key=lambda t: t.seconds))
    return Transfer(size_mib * MIB, elapsed, (f"{len(paths)} writers of {size_mib:,} MiB each; each took s: {each}",))


def disk_read(path: Path) -> Transfer:
    """Read ``path`` in 1 MiB pieces."""
    buffer = memoryview(bytearray(MIB))
    size = 0
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            size += n
    return Transfer(size, time.perf_counter() - started)


def median_of(count: int, run: Callable[[], Transfer], before_each: Callable[[], object] = lambda: None) -> Transfer:
    """``run`` ``count`` times: the median one, every rate in its notes (this VM's disk gives rates
    up to 2x apart from one run to the next)."""
    transfers = []
    for _ in range(count):
        before_each()
        transfers.append(run())
    transfers.sort(key=lambda t: t.seconds)
    middle = transfers[len(transfers) // 2]
    rates = ", ".join(f"{t.size / MIB / t.seconds:,.0f}" for t in transfers)
    return Transfer(middle.size, middle.seconds, (*middle.notes, f"the median of {count} runs (MiB/s: {rates})"))


def sha256_of(pool: bytes, size_mib: int) -> tuple[str, float]:
    """The data's SHA-256, and how fast this machine hashes (MiB/s) — a cost every checked read pays."""
    digest = hashlib.sha256()
    started = time.perf_counter()
    for piece in randomish_pieces(pool, size_mib):
        digest.update(piece)
    return digest.hexdigest(), size_mib / (time.perf_counter() - started)


def webhdfs_create(
    rm_web: str, path: str, source: Path, replication: int | None, nodes: Sequence[local_cluster.LocalNode]
) -> Transfer:
    """CREATE ``path`` from ``source``: the NameNode's 307, the bytes to the node, the node's 201."""
    size = source.stat().st_size
    params = {"op": "CREATE", **AUTH, "overwrite": "true"}
    if replication is not None:
        params["replication"] = str(replication)
    started = time.perf_counter()
    step = requests.put(f"http://{rm_web}/webhdfs/v1{path}", params=params, allow_redirects=False, timeout=60)
    if step.status_code != 307:
        raise BenchError(f"CREATE {path}: the NameNode answered {step.status_code}, not 307: {step.text[:500]}")
    location = step.headers["Location"]
    redirected = time.perf_counter()
    target = urlsplit(location)
    receiver = node_named_by(location, nodes)
    assert target.hostname is not None and target.port is not None
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=ANSWER_TIMEOUT_S)
    try:
        connection.putrequest("PUT", f"{target.path}?{target.query}")
        connection.putheader("Content-Type", "application/octet-stream")
        connection.putheader("Content-Length", str(size))
        connection.endheaders()
        progress = Progress(f"sending to {receiver}", size)
        buffer = memoryview(bytearray(MIB))
        sent = 0
        with open(source, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                connection.send(buffer[:n])
                sent += n
                progress.tick(sent)
        sent_at = time.perf_counter()
        answer = wait_with_progress(
            connection.getresponse,
            f"{receiver} to store the blocks, copy them down the pipeline and commit",
            lambda: f"block files so far (MiB): {stored_mib(nodes)}",
        )
        body = answer.read()
    finally:
        connection.close()
    done = time.perf_counter()
    if answer.status != 201:
        raise BenchError(f"CREATE {path}: {receiver} answered {answer.status}: {body[:500]!r}")
    note = (
        f"to {receiver}: NameNode 307 {redirected - started:.3f} s, body sent {sent_at - redirected:.2f} s "
        f"({size / MIB / (sent_at - redirected):,.0f} MiB/s), then {done - sent_at:.2f} s until the node's 201"
    )
    return Transfer(size, done - started, (note,))


def webhdfs_open(rm_web: str, path: str, size: int, sha256: str, nodes: Sequence[local_cluster.LocalNode]) -> Transfer:
    """OPEN ``path`` twice: timed, the NameNode's 307 then the bytes streamed from the node and
    counted (as the disk read counts them); then untimed, the same read with every byte hashed
    and the SHA-256 compared (hashing 1 GiB takes this client about as long as the read itself,
    so it is kept out of the rate)."""
    started = time.perf_counter()
    sender, first_byte, received = _webhdfs_read(rm_web, path, size, nodes, None)
    done = time.perf_counter()
    if received != size:
        raise BenchError(f"OPEN {path} from {sender}: {received} bytes, not {size}")
    digest = hashlib.sha256()
    checked_sender, _, received = _webhdfs_read(rm_web, path, size, nodes, digest)
    if received != size or digest.hexdigest() != sha256:
        raise BenchError(f"OPEN {path} from {checked_sender}: {received} bytes with SHA-256 {digest.hexdigest()}, "
                         f"not {size} bytes with {sha256}")
    note = (f"from {sender}: first byte after {first_byte - started:.3f} s (the NameNode's 307 included); "
            f"read again from {checked_sender}, untimed: SHA-256 matches")
    return Transfer(size, done - started, (note,))


def _webhdfs_read(
    rm_web: str, path: str, size: int, nodes: Sequence[local_cluster.LocalNode], digest: hashlib._Hash | None
) -> tuple[str, float, int]:
    """One OPEN through the NameNode's redirect: the sending node, when its first byte came, the bytes received."""
    step = requests.get(f"http://{rm_web}/webhdfs/v1{path}", params={"op": "OPEN", **AUTH},
                        allow_redirects=False, timeout=60)
    if step.status_code != 307:
        raise BenchError(f"OPEN {path}: the NameNode answered {step.status_code}, not 307: {step.text[:500]}")
    location = step.headers["Location"]
    target = urlsplit(location)
    sender = node_named_by(location, nodes)
    assert target.hostname is not None and target.port is not None
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
    received = 0
    try:
        connection.request("GET", f"{target.path}?{target.query}")
        response = connection.getresponse()
        if response.status != 200:
            raise BenchError(f"OPEN {path}: {sender} answered {response.status}: {response.read(500)!r}")
        first_byte = time.perf_counter()
        progress = Progress(f"reading from {sender}" + (" and hashing" if digest else ""), size)
        buffer = memoryview(bytearray(MIB))
        while n := response.readinto(buffer):
            if digest is not None:
                digest.update(buffer[:n])
            received += n
            progress.tick(received)
    finally:
        connection.close()
    return sender, first_byte, received


# -- the run


def measure(
    figures: list[Figure], nodes: Sequence[local_cluster.LocalNode], doing: str, name: str,
    run: Callable[[], Transfer], compare_to: str | None = None, judged: bool = True,
) -> None:
    """Say what is ``doing``, run it, print its rate and the CPU it cost, and keep it as ``name``."""
    say(f"{doing} ...")
    before = CostSample.take(nodes)
    transfer = run()
    after = CostSample.take(nodes)
    figure = Figure(name, transfer, compare_to, judged)
    figures.append(figure)
    say(f"  {name}: {transfer.size / MIB:,.0f} MiB in {transfer.seconds:.2f} s = {figure.mib_s:,.1f} MiB/s")
    for note in transfer.notes:
        say(f"    {note}")
    say(after.since(before))


def describe_file(rm_web: str, path: str, size: int) -> None:
    """Print the file's length, replication, blocks and holders per block; BenchError if its length is wrong."""
    url = f"http://{rm_web}/webhdfs/v1{path}"
    status = requests.get(url, params={"op": "GETFILESTATUS", **AUTH}, timeout=30).json()["FileStatus"]
    blocks = requests.get(url, params={"op": "GETFILEBLOCKLOCATIONS", **AUTH},
                          timeout=30).json()["BlockLocations"]["BlockLocation"]
    holders = sorted({len(b["hosts"]) for b in blocks})
    say(f"    {path}: length {status['length']:,}, replication {status['replication']}, {len(blocks)} blocks "
        f"of {status['blockSize'] // MIB} MiB, holders per block {holders}")
    if status["length"] != size:
        raise BenchError(f"{path} has {status['length']} bytes, not {size}")


#: How every request authenticates: the local cluster's admin credential (set once it is up).
AUTH: dict[str, str] = {}


def run_bench(workdir: Path, size_mib: int, node_count: int) -> list[Figure]:
    """Start the cluster in ``workdir`` and take every figure (the caller stops the cluster)."""
    size = size_mib * MIB
    say(f"starting a local cluster of {node_count} nodes in {workdir} ...")
    nodes = local_cluster.up(workdir, node_count, timeout=60, say=lambda m: say(f"  {m}") if m else None,
                             spark_archive=False)
    rm = nodes[0].rm
    assert rm is not None
    rm_web = str(rm.webapp)
    AUTH["delegation"] = local_cluster.admin_credential(workdir).webhdfs_delegation()
    wait_for_data_nodes(rm_web, min(3, node_count))
    figures: list[Figure] = []

    say(f"making {size_mib:,} MiB of random-ish data ({size_mib:,} distinct 1 MiB windows of "
        f"{POOL_BYTES // MIB} MiB from os.urandom) ...")
    pool = os.urandom(POOL_BYTES)
    sha256, hash_rate = sha256_of(pool, size_mib)
    say(f"  SHA-256 {sha256[:16]}..., hashed at {hash_rate:,.0f} MiB/s by this process")
    source = workdir / "bench-data"
    disk_writes = "disk write + fsync"
    measure(figures, nodes, f"local disk: writing {size_mib:,} MiB to {source} with os.write in 1 MiB pieces + fsync, "
            f"{DISK_RUNS} times", disk_writes, partial(median_of, DISK_RUNS, partial(disk_write, source, pool, size_mib)))
    copies = min(3, node_count)  # the NameNode's default replication, capped by the nodes there are
    copies_writes = disk_writes if copies == 1 else f"disk write + fsync, {copies} writers at once"
    if copies > 1:
        paths = [source, *(workdir / f"bench-data-{i}" for i in range(1, copies))]
        measure(figures, nodes, f"local disk: {copies} copies of {size_mib:,} MiB written at once (as a replication-"
                f"{copies} write stores them on this one disk), {DISK_RUNS} times", copies_writes,
                partial(median_of, DISK_RUNS, partial(disk_writes_at_once, paths, pool, size_mib)))
    del pool

    temperatures = ["cold", "warm"]
    if not drop_page_cache():
        say("  (the page cache cannot be dropped: not root, or /proc/sys/vm/drop_caches is not writable; "
            "every read below is warm)")
        temperatures = ["warm"]
    for temperature in temperatures:
        before_each = drop_page_cache if temperature == "cold" else (lambda: True)
        measure(figures, nodes, f"local disk: reading it back in 1 MiB pieces, {temperature}, {DISK_RUNS} times",
                f"disk read, {temperature}", partial(median_of, DISK_RUNS, partial(disk_read, source), before_each))

    files = {"/bench/replication-1": 1, "/bench/replication-default": None}
    for path, replication in files.items():
        label = f"replication {replication}" if replication else "default replication (3)"
        measure(figures, nodes, f"WebHDFS CREATE {path} ({size_mib:,} MiB, {label}), streamed from {source.name}",
                f"WebHDFS write, {label}", partial(webhdfs_create, rm_web, path, source, replication, nodes),
                compare_to=disk_writes if replication == 1 else copies_writes)
        describe_file(rm_web, path, size)

    for path, replication in files.items():
        label = f"replication {replication}" if replication else "default replication (3)"
        for temperature in temperatures:
            if temperature == "cold":
                drop_page_cache()
            measure(figures, nodes, f"WebHDFS OPEN {path}, {temperature}, checking the SHA-256",
                    f"WebHDFS read, {label}, {temperature}", partial(webhdfs_open, rm_web, path, size, sha256, nodes),
                    compare_to=f"disk read, {temperature}", judged=temperature == temperatures[0])
    return figures


def summary(figures: Sequence[Figure]) -> None:
    """The figures as a Markdown table, each file-system rate beside the disk's."""
    by_name = {f.what: f for f in figures}
    say("")
    say(f"| what | MiB | s | MiB/s | x disk | target >= {TARGET_RATIO} x |")
    say("|---|---|---|---|---|---|")
    for figure in figures:
        base = by_name.get(figure.compare_to or "")
        if base is None:
            ratio, met = "-", "-"
        else:
            r = figure.mib_s / base.mib_s
            ratio = f"{r:.2f} (of {base.what})"
            met = ("met" if r >= TARGET_RATIO else "**not met**") if figure.judged else "(page cache, not the disk)"
        say(f"| {figure.what} | {figure.transfer.size / MIB:,.0f} | {figure.transfer.seconds:.2f} | "
            f"{figure.mib_s:,.1f} | {ratio} | {met} |")


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="the file's size in MiB (default 1024)")
    parser.add_argument("--nodes", type=int, default=3, help="nodes of the local cluster (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, blocks, data)")
    args = parser.parse_args()
    if args.size_mib < 1:
        parser.error("--size-mib must be at least 1")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="cortex-fs-bench-"))
    started = time.monotonic()
    try:
        figures = run_bench(workdir, args.size_mib, args.nodes)
    except (BenchError, local_cluster.LocalClusterError) as e:
        say(f"failed: {e}")
        return 1
    finally:
        if (workdir / local_cluster.CLUSTER_FILE).exists():
            say("stopping the cluster ...")
            local_cluster.down(workdir, say=lambda m: say(f"  {m}"))
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    summary(figures)
    say(f"\n{args.nodes} nodes on loopback, {args.size_mib:,} MiB, {time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
