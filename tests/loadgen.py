"""A reproducible, bounded background load for timing tests on this machine.

``bursty_load(seconds, seed=0)`` starts one child process that keeps one core busy in random bursts of
50-500 ms separated by random pauses of 50-500 ms (the pattern of issue 12's A/A test), drawn from a seeded
generator, so two runs with the same seed load the machine the same way. The child stops by itself after
``seconds`` (hard bound), when the ``with`` block ends, or when the test process dies (it watches its parent).

    with bursty_load(30, seed=1):
        ...measure...

    python tests/loadgen.py SECONDS [SEED]    # the same load from a shell
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from typing import Iterator

BURST_S = (0.05, 0.5)
PAUSE_S = (0.05, 0.5)
MAX_SECONDS = 600.0


def run(seconds: float, seed: int) -> None:
    """The load itself (runs in the child): busy bursts and idle pauses until ``seconds`` have passed."""
    import random

    rng = random.Random(seed)
    parent = os.getppid()
    end = time.monotonic() + min(seconds, MAX_SECONDS)
    while time.monotonic() < end and os.getppid() == parent:
        burst_end = min(end, time.monotonic() + rng.uniform(*BURST_S))
        x = 0
        while time.monotonic() < burst_end:
            for _ in range(2000):
                x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        time.sleep(max(0.0, min(end - time.monotonic(), rng.uniform(*PAUSE_S))))


@contextlib.contextmanager
def bursty_load(seconds: float, seed: int = 0) -> Iterator[subprocess.Popen]:
    """Bursty one-core load in a child process for at most ``seconds`` (stopped when the block ends)."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), repr(float(seconds)), str(int(seed))],
                            stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    run(float(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0)
