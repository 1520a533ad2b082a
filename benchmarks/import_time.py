"""What importing workerstate costs a worker, measured with ``python -X importtime``.

Every worker process that runs a workerstate task imports ``workerstate.parallel`` (joblib is
imported anyway). Run:

    python benchmarks/import_time.py

Byte-code is cached in a temporary directory for the run, as an installed package has it,
so compiling the sources does not count.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile

RUNS = 15


def _cumulative_us(stderr: str, module: str) -> int:
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)$", line)
        if match and match.group(3) == module:
            return int(match.group(1))
    raise RuntimeError(f"{module} not found in -X importtime output")


def measure(statement: str, module: str, env: dict[str, str]) -> float:
    times = []
    for _ in range(RUNS):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", statement],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        times.append(_cumulative_us(proc.stderr, module))
    return statistics.median(times) / 1000


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache
        subprocess.run([sys.executable, "-c", "import workerstate.parallel"], env=env, check=True)
        joblib_ms = measure("import joblib", "joblib", env)
        after_ms = measure(
            "import joblib; import workerstate.parallel", "workerstate.parallel", env
        )
        top_ms = measure("import workerstate", "workerstate", env)
        script = (
            "import sys, workerstate.parallel; "
            "print(','.join(m for m in ('sklearn', 'pandas', 'scipy', 'dask', 'distributed', 'ray')"
            " if m in sys.modules))"
        )
        heavy = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
        ).stdout.strip()
    print(f"median of {RUNS} runs, byte-code cached")
    print(f"import joblib                              {joblib_ms:7.1f} ms")
    print(f"import workerstate.parallel, after joblib  {after_ms:7.1f} ms")
    print(f"import workerstate                         {top_ms:7.1f} ms")
    print(f"optional libraries imported: {heavy or 'none'}")


if __name__ == "__main__":
    main()
