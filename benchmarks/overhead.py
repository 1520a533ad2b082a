"""Per-task cost of workerstate against plain joblib and other wrappers: CPU and wall time.

Every loky row runs on one warmed loky pool (n_jobs=2, auto batching) with the same registered
state: scikit-learn's config (``workerstate.presets.sklearn_config``) and one custom value,
plus 18 more callbacks in the 20-callback rows. Every timed run registers a new token, and
every task returns which state it saw, so every task of every timed run is checked.

The rows with targets register the callbacks with ``check="batch"`` (the tasks leave the
state as they found it, so a worker reads it once per batch); the ``-task`` rows register
them with the default ``check="task"``, which reads every callback before every task of a
batch, and show what that costs.

How a run is timed: the CPU time is the parent's (all its threads) plus that of every process
below it (the loky workers and loky's resource tracker), read from each process's CPU-time
clock (in ns, threads that ended included) just before and just after the call; the wall time
is ``perf_counter`` around the same call. Contenders take turns: round r runs every contender
once, in an order rotated by one each round, with a plain joblib run before the first and
after each one. The table shows the median time per task over the rounds (plain joblib's
over all its runs), and as the ratio the median over the rounds of the run's ratio to the
mean of the plain joblib runs just before and just after it, so that a drift of the machine
does not enter the ratio. Garbage is never collected between runs: a contender pays for the
collections its own garbage causes, as a program does. The other wrappers (scikit-learn's and
tpcp's), which have no targets, run in the first 3 rounds only.

The dask row runs on a ``LocalCluster`` with a 10 MB value and counts the bytes that every
process of the cluster and the client writes to its TCP comms during the call.

    python benchmarks/overhead.py                        # every row, 9 rounds
    python benchmarks/overhead.py --quick                # 10x fewer tasks, 2 rounds
    python benchmarks/overhead.py --rows trivial,dask    # some rows
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# Before any worker starts: loky's and dask's workers get this sys.path and import bench_tasks.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_tasks
import joblib
import sklearn

import workerstate
from workerstate import parallel as ws
from workerstate import presets

try:
    from sklearn.utils import parallel as sk_parallel
except ImportError:  # scikit-learn before 1.3
    sk_parallel = None
try:
    from tpcp import parallel as tpcp_parallel
except ImportError:  # tpcp is optional: pip install -e ".[bench]"
    tpcp_parallel = None

N_JOBS = 2
SKLEARN, CUSTOM, WARNINGS, SLOTS = 1, 2, 4, 8
N_SLOTS = 18  # with scikit-learn's config and the custom value: 20 callbacks
#: Rounds for the other wrappers, which have no targets: tpcp's call of 100,000 tasks lasts
#: about 20 s.
COMPARED_ROUNDS = 3

Runner = Callable[[Callable[..., Any], int, str], list[int]]


@dataclass
class Contender:
    name: str
    #: Which targets apply: "floor", "delayed", "Parallel", "backend", or "" for none.
    kind: str
    #: Bits of :func:`bench_tasks.seen` that every task must show.
    promised: int
    run: Runner


@dataclass
class Row:
    key: str
    title: str
    n_tasks: int
    func: Callable[..., Any]
    blob_bytes: int
    slots: bool
    #: Upper bound of the ratio to plain joblib, per contender kind.
    targets: dict[str, float]
    #: How the callbacks are registered: ``check="batch"`` or the default ``"task"``.
    check: str = "batch"


@dataclass
class Cell:
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    #: Per run: the mean of the plain joblib runs just before and just after it.
    base_cpu: list[float] = field(default_factory=list)
    base_wall: list[float] = field(default_factory=list)
    wrong: int = 0
    lost_workers: int = 0

    def add(self, sample: Sample, contender: Contender, row: Row) -> None:
        self.cpu.append(sample.cpu)
        self.wall.append(sample.wall)
        self.lost_workers += sample.lost
        self.wrong += _wrong(sample.out, row.n_tasks, contender.promised)


@dataclass
class Sample:
    """One timed call: CPU and wall seconds, workers lost during it, its result."""

    cpu: float
    wall: float
    lost: int
    out: list[int]


# -- CPU time -----------------------------------------------------------------------
def _parent(pid: int) -> int | None:
    """The parent pid of a process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: fields count from after it.
    return int(data[data.rindex(b")") + 2 :].split()[1])


def _descendants() -> list[int]:
    """Every process below this one, found through the parent pids in ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def _cpu_ns(pids: list[int]) -> dict[int, int]:
    """CPU time in ns of each process still alive: its CPU-time clock, all threads, dead ones too."""
    times = {}
    for pid in pids:
        with contextlib.suppress(OSError):  # gone
            times[pid] = time.clock_gettime_ns(_process_clock(pid))
    return times


def _process_clock(pid: int) -> int:
    # The id of another process's CPU-time clock, as glibc's clock_getcpuclockid makes it:
    # ~pid << 3 | CPUCLOCK_SCHED. It counts in ns, where /proc/PID/stat counts in ticks of
    # 10 ms, which a call of a second splits into a hundred.
    return (~pid << 3) | 2


def _timed(run: Callable[[], list[int]]) -> Sample:
    """The call timed: CPU seconds of this process and of the processes below it."""
    before = _cpu_ns(_descendants())
    own = time.process_time_ns()
    start = time.perf_counter()
    out = run()
    wall = time.perf_counter() - start
    own = time.process_time_ns() - own
    after = _cpu_ns(_descendants())
    # A process started during the call counts from zero; one that ended is lost.
    workers = sum(ns - before.get(pid, 0) for pid, ns in after.items())
    lost = len(set(before) - set(after))
    return Sample((own + workers) / 1e9, wall, lost, out)


# -- contenders -----------------------------------------------------------------------------------
def _contenders(slots: bool) -> list[Contender]:
    everything = SKLEARN | CUSTOM | WARNINGS | (SLOTS if slots else 0)

    def plain(func: Callable[..., Any], n: int, token: str) -> list[int]:
        return joblib.Parallel(n_jobs=N_JOBS)(joblib.delayed(func)(token) for _ in range(n))

    def ws_delayed(func: Callable[..., Any], n: int, token: str) -> list[int]:
        return joblib.Parallel(n_jobs=N_JOBS)(ws.delayed(func)(token) for _ in range(n))

    def ws_parallel(func: Callable[..., Any], n: int, token: str) -> list[int]:
        return ws.Parallel(n_jobs=N_JOBS)(joblib.delayed(func)(token) for _ in range(n))

    def ws_backend(func: Callable[..., Any], n: int, token: str) -> list[int]:
        with joblib.parallel_config(backend="workerstate"):
            return plain(func, n, token)

    def ws_enable(func: Callable[..., Any], n: int, token: str) -> list[int]:
        workerstate.enable()
        try:
            return plain(func, n, token)
        finally:
            workerstate.disable()

    found = [
        Contender("joblib.delayed, no state (floor)", "floor", 0, plain),
        Contender("workerstate delayed + joblib.Parallel", "delayed", everything, ws_delayed),
        Contender("workerstate Parallel + joblib.delayed", "Parallel", everything, ws_parallel),
        Contender("joblib.delayed, workerstate backend", "backend", everything, ws_backend),
        Contender("joblib.delayed after enable()", "backend", everything, ws_enable),
    ]
    if sk_parallel is not None:

        def sklearn_wrapper(func: Callable[..., Any], n: int, token: str) -> list[int]:
            return sk_parallel.Parallel(n_jobs=N_JOBS)(
                sk_parallel.delayed(func)(token) for _ in range(n)
            )

        found.append(
            Contender(
                "sklearn.utils.parallel (own config)", "", SKLEARN | WARNINGS, sklearn_wrapper
            )
        )
    if tpcp_parallel is not None:

        def tpcp_delayed(func: Callable[..., Any], n: int, token: str) -> list[int]:
            return joblib.Parallel(n_jobs=N_JOBS)(
                tpcp_parallel.delayed(func)(token) for _ in range(n)
            )

        tpcp_bits = SKLEARN | CUSTOM | (SLOTS if slots else 0)
        found.append(Contender("tpcp.parallel.delayed", "", tpcp_bits, tpcp_delayed))
    return found


@contextlib.contextmanager
def _registered(slots: bool, check: str = "batch") -> Iterator[None]:
    """scikit-learn's config and the custom value, plus the slots, in workerstate and tpcp."""
    callbacks: list[tuple[Any, str]] = [
        (presets.sklearn_config, "sklearn"),
        (bench_tasks.state_callback, "custom"),
    ]
    if slots:
        callbacks += [(cb, f"slot-{cb.index}") for cb in bench_tasks.make_slots(N_SLOTS)]
    names = [
        ws.register_global_parallel_callback(cb, name=name, check=check) for cb, name in callbacks
    ]
    tpcp_names = []
    if tpcp_parallel is not None:
        tpcp_names = [tpcp_parallel.register_global_parallel_callback(cb) for cb, _ in callbacks]
    try:
        yield
    finally:
        for name in names:
            ws.remove_global_parallel_callback(name)
        remove = getattr(tpcp_parallel, "remove_global_parallel_callback", None)
        for tpcp_name in tpcp_names:
            if remove is not None:
                remove(tpcp_name)
        bench_tasks.SLOTS.clear()


def _new_state(blob_bytes: int) -> str:
    token = uuid.uuid4().hex
    bench_tasks.set_state({"token": token, "blob": b"x" * blob_bytes})
    bench_tasks.set_slots(token)
    return token


def _wrong(out: list[int], n_tasks: int, promised: int) -> int:
    return n_tasks - len(out) + sum(1 for mask in out if mask & promised != promised)


# -- loky rows ------------------------------------------------------------------------------------
def run_loky(row: Row, rounds: int) -> None:
    contenders = _contenders(row.slots)
    floor, others = contenders[0], contenders[1:]
    cells = {c.name: Cell() for c in contenders}

    def timed(contender: Contender) -> Sample:
        token = _new_state(row.blob_bytes)
        sample = _timed(lambda: contender.run(row.func, row.n_tasks, token))
        cells[contender.name].add(sample, contender, row)
        return sample

    with _registered(row.slots, row.check):
        _new_state(row.blob_bytes)
        for contender in contenders:  # warm: every contender's imports, the pool's workers
            contender.run(row.func, min(row.n_tasks, 2_000), "warm")
        for r in range(rounds):
            # Plain joblib runs before and after every other contender, which is compared
            # with the mean of those two runs: a drift of the machine over a round hits both
            # sides of each ratio alike. The others' order is rotated each round, so that
            # the garbage one contender leaves does not always fall on the same one.
            shift = r % len(others)
            before = timed(floor)
            for contender in others[shift:] + others[:shift]:
                if not contender.kind and r >= COMPARED_ROUNDS:
                    continue
                timed(contender)
                after = timed(floor)
                cell = cells[contender.name]
                cell.base_cpu.append((before.cpu + after.cpu) / 2)
                cell.base_wall.append((before.wall + after.wall) / 2)
                before = after
    _print_loky(row, contenders, cells, rounds)


def _verdict(ratio: float, target: float | None) -> str:
    if target is None:
        return ""
    return f"<={target:.2f} {'met' if ratio <= target else 'NOT MET'}"


def _print_loky(row: Row, contenders: list[Contender], cells: dict[str, Cell], rounds: int) -> None:
    floor = cells[contenders[0].name]
    print(
        f"\n{row.title} (median of {rounds} rounds, plain joblib's us/task of its "
        f"{len(floor.cpu)} runs; CPU = parent + loky workers; ratio = median of the ratios to "
        "the plain joblib runs either side, [lowest-highest])"
    )
    print(
        f"{'contender':40} {'CPU us/task':>11} {'ratio':>6} {'spread':11} {'target':14} "
        f"{'wall us/task':>12} {'ratio':>6} {'spread':11} {'target':14} state"
    )
    for contender in contenders:
        cell = cells[contender.name]
        target = row.targets.get(contender.kind)
        if not contender.promised:
            state = "nothing promised" if cell.wrong == 0 else f"{cell.wrong} tasks lost"
        else:
            state = "state ok" if cell.wrong == 0 else f"WRONG STATE in {cell.wrong:,} tasks"
        if cell.lost_workers:
            state += f", {cell.lost_workers} workers replaced"
        if cell is not floor and len(cell.cpu) != rounds:
            state += f" ({len(cell.cpu)} rounds)"
        columns = []
        if cell is floor:
            pairs = ((cell.cpu, cell.cpu), (cell.wall, cell.wall))
        else:  # each run against the plain joblib runs on either side of it
            pairs = ((cell.cpu, cell.base_cpu), (cell.wall, cell.base_wall))
        for mine, base in pairs:
            ratios = [a / b for a, b in zip(mine, base, strict=True)]
            ratio = statistics.median(ratios)
            columns.append(
                f"{statistics.median(mine) / row.n_tasks * 1e6:{11 if not columns else 12}.2f} "
                f"{ratio:5.2f}x {f'[{min(ratios):.2f}-{max(ratios):.2f}]':11} "
                f"{_verdict(ratio, target):14}"
            )
        print(f"{contender.name:40} {columns[0]} {columns[1]} {state}")


# -- dask row -------------------------------------------------------------------------------------
def run_dask(n_tasks: int, size: int, rounds: int) -> None:
    try:
        import distributed
        from distributed import Client, LocalCluster
    except ImportError:
        print("\ndask row: distributed is not installed; skipped")
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        cluster = LocalCluster(
            n_workers=N_JOBS,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
    client = Client(cluster, set_as_default=False)
    everything = SKLEARN | CUSTOM | WARNINGS
    func = bench_tasks.trivial

    def plain(token: str) -> list[int]:
        with joblib.parallel_config("dask", client=client):
            return joblib.Parallel()(joblib.delayed(func)(token) for _ in range(n_tasks))

    def ws_delayed(token: str) -> list[int]:
        with joblib.parallel_config("dask", client=client):
            return joblib.Parallel()(ws.delayed(func)(token) for _ in range(n_tasks))

    def ws_parallel(token: str) -> list[int]:
        with joblib.parallel_config("dask", client=client):
            return ws.Parallel()(joblib.delayed(func)(token) for _ in range(n_tasks))

    def ws_backend(token: str) -> list[int]:
        with joblib.parallel_config(backend="workerstate", inner="dask", client=client):
            return joblib.Parallel()(joblib.delayed(func)(token) for _ in range(n_tasks))

    contenders = [
        ("joblib.delayed, no state (floor)", 0, plain),
        ("workerstate delayed + joblib.Parallel", everything, ws_delayed),
        ("workerstate Parallel + joblib.delayed", everything, ws_parallel),
        ("joblib.delayed, workerstate backend", everything, ws_backend),
    ]
    sent: dict[str, list[int]] = {name: [] for name, _, _ in contenders}
    walls: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
    wrong = dict.fromkeys(sent, 0)

    def count() -> int:
        return bench_tasks.bytes_sent() + sum(client.run(bench_tasks.bytes_sent).values())

    try:
        client.wait_for_workers(N_JOBS, timeout=60)
        bench_tasks.count_tcp_writes()
        client.run(bench_tasks.count_tcp_writes)
        with _registered(slots=False):
            for _, _, runner in contenders:
                runner("warm")
            for r in range(rounds):
                shift = r % len(contenders)
                for name, promised, runner in contenders[shift:] + contenders[:shift]:
                    # A new value each run, so that every run really ships it.
                    token = uuid.uuid4().hex
                    bench_tasks.set_state({"token": token, "blob": os.urandom(size)})
                    before = count()
                    start = time.perf_counter()
                    out = runner(token)
                    walls[name].append(time.perf_counter() - start)
                    sent[name].append(count() - before)
                    wrong[name] += _wrong(out, n_tasks, promised)
    finally:
        client.close()
        cluster.close()
    print(
        f"\ndask {distributed.__version__}: LocalCluster, {N_JOBS} worker processes x 1 thread, "
        f"{n_tasks:,} tasks, a {size / 1e6:g} MB value (median of {rounds} rounds)"
    )
    print(
        "bytes: every message written to distributed's TCP comms during the call, added up in "
        "the client, the scheduler and each worker"
    )
    print(f"{'contender':40} {'kB sent/task':>12} {'MB sent':>9} {'wall s':>7} state")
    for name, promised, _ in contenders:
        nbytes = statistics.median(sent[name])
        if not promised:
            state = "nothing promised" if wrong[name] == 0 else f"{wrong[name]} tasks lost"
        else:
            state = "state ok" if wrong[name] == 0 else f"WRONG STATE in {wrong[name]:,} tasks"
        print(
            f"{name:40} {nbytes / n_tasks / 1e3:12.1f} {nbytes / 1e6:9.1f} "
            f"{statistics.median(walls[name]):7.2f} {state}"
        )


# -- main -----------------------------------------------------------------------------------------
def _rows(scale: int) -> list[Row]:
    trivial = 100_000 // scale
    targets = {"delayed": 1.10, "Parallel": 1.10, "backend": 1.15}
    return [
        Row(
            "trivial",
            f"{trivial:,} trivial tasks, 2 callbacks, check='batch'",
            trivial,
            bench_tasks.trivial,
            64,
            False,
            targets,
        ),
        # 100,000 tasks, as in the other rows: a call of 20,000 trivial tasks lasts about
        # 0.1 s, and joblib's automatic batching is still growing its batches when it ends,
        # so its time moves by a third from one call to the next.
        Row(
            "1mb",
            f"{trivial:,} trivial tasks, 2 callbacks, check='batch', a 1 MB value",
            trivial,
            bench_tasks.trivial,
            1 << 20,
            False,
            {"delayed": 1.20, "Parallel": 1.20, "backend": 1.20},
        ),
        Row(
            "callbacks20",
            f"{trivial:,} trivial tasks, 20 callbacks, check='batch'",
            trivial,
            bench_tasks.trivial_slots,
            64,
            True,
            {"delayed": 1.30, "Parallel": 1.30, "backend": 1.30},
        ),
        # The default: every callback read before every task of a batch. No targets: this
        # is the callbacks' own cost, once per task.
        Row(
            "trivial-task",
            f"{trivial:,} trivial tasks, 2 callbacks, check='task' (the default)",
            trivial,
            bench_tasks.trivial,
            64,
            False,
            {},
            check="task",
        ),
        Row(
            "callbacks20-task",
            f"{trivial:,} trivial tasks, 20 callbacks, check='task' (the default)",
            trivial,
            bench_tasks.trivial_slots,
            64,
            True,
            {},
            check="task",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x fewer tasks, 2 rounds")
    parser.add_argument("--rounds", type=int, default=0, help="default: 9, or 2 with --quick")
    parser.add_argument(
        "--rows",
        default="trivial,1mb,callbacks20,trivial-task,callbacks20-task,dask",
        help="comma-separated, from: trivial, 1mb, callbacks20, trivial-task, "
        "callbacks20-task, dask",
    )
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    rounds = args.rounds or (2 if args.quick else 9)
    rows = {row.key: row for row in _rows(scale)}
    chosen = [key.strip() for key in args.rows.split(",") if key.strip()]
    unknown = [key for key in chosen if key not in rows and key != "dask"]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {[*rows, 'dask']}")

    sklearn.set_config(assume_finite=True)
    warnings.filterwarnings("ignore", message=bench_tasks.MARKER)
    print(
        f"{_cpu_model()}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"joblib {joblib.__version__}, workerstate {workerstate.__version__}, "
        f"scikit-learn {sklearn.__version__}, "
        f"tpcp {'not installed' if tpcp_parallel is None else _version('tpcp')}; "
        f"n_jobs={N_JOBS}, loky; CPU from each process's CPU-time clock, in ns"
    )
    print(
        "targets: ratio to plain joblib, CPU and wall; joblib.delayed after enable() is held to "
        "the backend's target"
    )
    for key in chosen:
        if key == "dask":
            run_dask(1_000 // scale, 10_000_000, rounds)
        else:
            run_loky(rows[key], rounds)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
