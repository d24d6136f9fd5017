"""Jobs for tests/core/test_affinity.py: one that starts a child process and has the child
write down the cores it may use."""

from __future__ import annotations

import subprocess
import sys
import time

from conveyor import App

app = App()

CHILD = (
    "import os, sys, time; time.sleep(float(sys.argv[2])); "
    "open(sys.argv[1], 'w').write(' '.join(map(str, sorted(os.sched_getaffinity(0)))))"
)


@app.job()
def tick(n: int) -> None:
    time.sleep(0.02)


@app.job()
def spawn(path: str, after: float) -> None:
    subprocess.run([sys.executable, "-c", CHILD, path, str(after)], check=True)
