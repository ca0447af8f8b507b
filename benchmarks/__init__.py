"""Benchmarks of what a user pays for: training throughput, mask building, job start-up, the whole DAG.

`python -m benchmarks` (what `make bench` runs) runs them all and writes results/bench/bench.json.
The machine may be shared, so every comparison runs its sides alternately, round by round (each
side in a process of its own), and quotes medians: a neighbour's load then slows both sides alike.
"""
from __future__ import annotations

import multiprocessing
import statistics
import traceback
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import yaml

REPO = Path(__file__).resolve().parents[1]


def config() -> dict:
    """The pipeline's config.yaml: benchmarks use its recipes and thread count, not copies of them."""
    return yaml.safe_load((REPO / "config.yaml").read_text())


def alternate(sides: dict[str, Callable[[], float]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Call every side once per round, rotating which goes first; the warm-up rounds are not kept."""
    names = list(sides)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        first = r % len(names)
        for n in names[first:] + names[:first]:
            value = sides[n]()
            if r >= warmup:
                out[n].append(value)
    return out


class Isolated:
    """A benchmark side in a spawned process of its own: `make()` (picklable, e.g. a functools.partial
    of a module-level function) sets the side up there and returns a round; calling this runs one.

    Sides share nothing then: not the allocator's state, nor the threads, nor the memory a forked
    DataLoader worker would inherit.
    """

    def __init__(self, make: Callable[[], Callable[[], float]], threads: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, make, threads))
        self._proc.start()
        self._answer()  # set up, or the side's traceback

    def __call__(self) -> float:
        self._conn.send(True)
        return self._answer()

    def close(self) -> None:
        if self._proc.is_alive():
            self._conn.send(False)
        self._proc.join()

    def _answer(self) -> float:
        ok, value = self._conn.recv()
        if not ok:
            self._proc.join()
            raise RuntimeError(f"a benchmark side failed in its process:\n{value}")
        return value


def _serve(conn, make: Callable[[], Callable[[], float]], threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        round_ = make()
        conn.send((True, 0.0))
        while conn.recv():
            conn.send((True, round_()))
    except Exception:  # noqa: BLE001 - any failure goes back to the parent with its trace
        conn.send((False, traceback.format_exc()))


@contextmanager
def isolated(makes: dict[str, Callable[[], Callable[[], float]]], threads: int) -> Iterator[dict[str, Isolated]]:
    """Every side set up in its own process, all closed on exit."""
    with ExitStack() as stack:
        sides = {}
        for name, make in makes.items():
            sides[name] = Isolated(make, threads)
            stack.callback(sides[name].close)
        yield sides


def ratio(a: list[float], b: list[float]) -> float:
    """The median of the per-round ratios a/b: the two sides of a round ran under the same load."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class Target:
    """A figure the benchmarks must reach; `at_least` for speed-ups, else an upper bound on a cost."""

    key: str
    value: float
    limit: float
    at_least: bool
    unit: str = "×"

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def verdict(self) -> str:
        sign = (">=" if self.met else "<") if self.at_least else ("<=" if self.met else ">")
        state = "target met" if self.met else "target not met"
        return f"{state}: {self._shown()}{self.unit} {sign} {self.limit:g}{self.unit}"

    def _shown(self) -> str:
        """The value with enough decimals that a miss never reads as equal to the limit."""
        for digits in range(2, 6):
            text = f"{self.value:.{digits}f}"
            if self.met or float(text) != self.limit:
                return text
        return repr(self.value)
