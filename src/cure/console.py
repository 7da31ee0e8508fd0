"""The console of ``cure run``: one live progress line for a person, the orchestrator's full output in a log file.

``kfp.local`` prints every task's streamed logs and a dump of its inputs and outputs (thousands of lines for the
demo). :class:`RunConsole` captures all of it (``sys.stdout``, ``sys.stderr`` and the root logger) into
``<run folder>/run.log`` and shows instead:

* a progress display: round r/N, the stage running, elapsed time, and the last round's key numbers (mean
  rewards, pass rates, loss, KL) — a bar on a terminal (``rich``), plain lines when the output is not a terminal;
* each evaluation's table as it completes;
* at the end, the summary table and where the report and the log are.

It reads only what the pipeline prints: components log ``round %d: <stage>`` (the global round number) at the
start of each stage, and ``kfp.local`` prints ``Task ... finished`` followed by the task's outputs, whose
``Metrics`` artifact carries the step's numbers in ``metadata={...}``. Task names are never interpreted; the
stage a metrics dict belongs to is the last stage announced, or else recognised by its keys.
"""

from __future__ import annotations

import ast
import io
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STAGE = re.compile(r"\bround (\d+): ([A-Za-z][\w-]*)\s*$")
_TASK_START = re.compile(r"Executing task '([^']+)'")
_TASK_DONE = re.compile(r"Task '([^']+)' finished with status (\w+)")
_WARM = re.compile(r"warm start step (\d+)/(\d+)")
_METADATA = re.compile(r"metadata=(\{.*\})\s*\)\s*$")

STAGES = ("rollout", "execute", "reward", "train", "evaluate")

# Keys that identify a step's metrics when no stage was announced (see cure.stages).
_KEY_HINTS = (
    ("train", ("loss", "kl")),
    ("reward", ("coder_examples", "tester_examples")),
    ("execute", ("train_code_acc",)),
    ("rollout", ("programs", "tests_extracted")),
    ("evaluate", ("code_acc", "unit_test_acc")),
)


def stage_of(metrics: dict[str, Any]) -> str | None:
    """The step a metrics dict came from, recognised by its keys (None when unknown)."""
    for stage, keys in _KEY_HINTS:
        if all(k in metrics for k in keys):
            return stage
    return None


def _fmt_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 60}:{s % 60:02d}"


def _num(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else "-"


class RunState:
    """What the console knows about the run, updated line by line from the orchestrator's output."""

    def __init__(self, rounds: int, evaluations: list[int] | None = None) -> None:
        self.rounds = rounds
        self.evaluations = list(evaluations or [])
        self.round: int | None = None
        self.stage: str | None = None
        self.task: str | None = None
        self.tasks_done = 0
        self.metrics: dict[int, dict[str, dict[str, Any]]] = {}  # round -> stage -> metrics
        self.stage_seconds: dict[str, float] = {}
        self._stage_t0: float | None = None
        self.failed: str | None = None
        self.announced = False  # whether any component announced ``round N: stage``
        self._trained = 0  # training steps finished (the round when none is announced)

    @property
    def rounds_done(self) -> int:
        """Rounds whose training step finished."""
        return sum(1 for r, m in self.metrics.items() if "train" in m and r >= 1)

    def last_round(self) -> tuple[int, dict[str, dict[str, Any]]] | None:
        done = [r for r, m in self.metrics.items() if "train" in m]
        return (max(done), self.metrics[max(done)]) if done else None

    def feed(self, line: str) -> list[tuple[str, Any]]:
        """Update from one output line; return the events it caused: ("stage", (round, stage)),
        ("task", name), ("note", text), ("metrics", (round, stage, dict)), ("failed", name)."""
        line = _ANSI.sub("", line).rstrip("\n")
        events: list[tuple[str, Any]] = []
        if m := _STAGE.search(line):
            now = time.monotonic()
            if self.stage and self._stage_t0 is not None:
                self.stage_seconds[self.stage] = self.stage_seconds.get(self.stage, 0.0) + now - self._stage_t0
            self.round, self.stage, self._stage_t0 = int(m[1]), m[2], now
            self.announced = True
            events.append(("stage", (self.round, self.stage)))
        elif m := _WARM.search(line):
            self.task = f"tiny model build, step {m[1]}/{m[2]}"
            events.append(("note", self.task))
        elif m := _TASK_START.search(line):
            self.task = m[1]
            events.append(("task", m[1]))
        elif m := _TASK_DONE.search(line):
            self.tasks_done += 1
            if m[2].upper() != "SUCCESS":
                self.failed = m[1]
                events.append(("failed", m[1]))
        elif m := _METADATA.search(line):
            try:
                meta = ast.literal_eval(m[1])
            except (ValueError, SyntaxError):
                meta = None
            if isinstance(meta, dict) and meta and all(isinstance(v, (int, float)) for v in meta.values()):
                stage = stage_of(meta) or self.stage
                if stage:
                    if self.announced and self.round is not None:
                        rnd = self.round
                    else:
                        rnd = self._trained + (stage != "evaluate")
                    self._trained += stage == "train"
                    self.metrics.setdefault(rnd, {})[stage] = meta
                    events.append(("metrics", (rnd, stage, meta)))
        return events

    def summary_line(self) -> str:
        """The last trained round's key numbers, e.g. ``round 3: coder reward 0.61 tester reward 0.42 ...``."""
        last = self.last_round()
        if last is None:
            return ""
        r, m = last
        rw, ex, tr = m.get("reward", {}), m.get("execute", {}), m.get("train", {})
        parts = [f"round {r}:"]
        if "coder_reward_mean" in rw:
            parts.append(f"reward coder {_num(rw['coder_reward_mean'], 2)} tester {_num(rw.get('tester_reward_mean'), 2)}")
        if "train_code_acc" in ex:
            parts.append(f"pass code {_num(ex['train_code_acc'], 2)} tests {_num(ex.get('train_unit_test_acc'), 2)}")
        if "loss" in tr:
            parts.append(f"loss {tr['loss']:+.4f} kl {_num(tr.get('kl'), 4)}")
        return "  ".join(parts)


EVAL_COLUMNS = ("code_acc", "unit_test_acc", "p01", "p00", "discriminative_test_share")


def eval_table(round_: int, metrics: dict[str, Any]) -> str:
    """An evaluation's numbers as a small table (primary benchmark)."""
    cols = [c for c in EVAL_COLUMNS if c in metrics] + sorted(k for k in metrics if k.startswith("bon_"))
    header = ["round", *cols]
    row = [str(round_), *(_num(metrics[c]) for c in cols)]
    widths = [max(len(h), len(v)) for h, v in zip(header, row)]
    return "\n".join([
        f"evaluation after round {round_}:",
        "  " + "  ".join(h.rjust(w) for h, w in zip(header, widths)),
        "  " + "  ".join(v.rjust(w) for v, w in zip(row, widths)),
    ])


class _Capture(io.TextIOBase):
    """A text stream that writes everything to the log file and hands complete lines to a callback."""

    def __init__(self, log_file: TextIO, on_line: Callable[[str], None]) -> None:
        self._log = log_file
        self._on_line = on_line
        self._buf = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        with self._lock:
            self._log.write(s)
            self._buf += s
            *lines, self._buf = self._buf.split("\n")
        for line in lines:
            self._on_line(line)
        return len(s)

    def flush(self) -> None:
        self._log.flush()

    def isatty(self) -> bool:
        return False


class RunConsole:
    """Context manager around the pipeline call of ``cure run`` (see the module docstring).

    ``tty`` forces the bar (True) or plain lines (False); by default the bar is shown on a terminal unless
    ``CURE_PLAIN_CONSOLE=1``.
    """

    def __init__(self, run_dir: str | Path, rounds: int, title: str = "cure run", evaluations: list[int] | None = None,
                 tty: bool | None = None, stream: TextIO | None = None, what: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.log_path = self.run_dir / "run.log"
        self.title = title
        self.what = what or f"{rounds} rounds"  # the title line's description of the run
        self.state = RunState(rounds, evaluations)
        self.out = stream or sys.stdout
        self.tty = (self.out.isatty() and not _env_plain()) if tty is None else tty
        self.t0 = time.monotonic()
        self._progress: Any = None
        self._task_id: Any = None
        self._saved: tuple[Any, ...] = ()
        self._log_file: TextIO | None = None

    # --- output -----------------------------------------------------------------------------------------
    def print(self, text: str = "") -> None:
        """A line (or block) for the person, above the live display."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def _elapsed(self) -> str:
        return _fmt_seconds(time.monotonic() - self.t0)

    def _status(self) -> str:
        s = self.state
        where = f"round {s.round}/{s.rounds}" if s.round is not None else "starting"
        stage = s.stage or (s.task if s.task and s.task.startswith("tiny") else f"task {s.task}" if s.task else "")
        return f"{where} {stage}".strip()

    def _refresh(self) -> None:
        if self._progress is not None:  # the last round's numbers are printed above the bar as each round ends
            self._progress.update(self._task_id, completed=self.state.rounds_done, description=self._status())

    def _on_line(self, line: str) -> None:
        for kind, value in self.state.feed(line):
            if kind == "stage":
                r, stage = value
                if self._progress is None:
                    where = f"round {r}/{self.state.rounds}" if self.state.rounds else f"round {r}"
                    self.print(f"[{self._elapsed()}] {where}: {stage}")
            elif kind == "task" and not self.state.announced and self._progress is None:
                self.print(f"[{self._elapsed()}] task {value}")
            elif kind == "note" and self._progress is None:
                self.print(f"[{self._elapsed()}] {value}")
            elif kind == "metrics":
                r, stage, metrics = value
                if stage == "train":
                    self.print(f"[{self._elapsed()}] {self.state.summary_line()}")
                elif stage == "evaluate" and any(c in metrics for c in EVAL_COLUMNS):
                    self.print(eval_table(r, metrics))  # not the counts of a task that follows
            elif kind == "failed":
                self.print(f"[{self._elapsed()}] task {value} FAILED; see {self.log_path}")
        self._refresh()

    # --- context ----------------------------------------------------------------------------------------
    def __enter__(self) -> RunConsole:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self.print(f"{self.title}: {self.what}; full orchestrator output: {self.log_path}")
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description:<22}"), BarColumn(bar_width=30), MofNCompleteColumn(), TimeElapsedColumn(),
                console=Console(file=self.out, force_terminal=True), transient=False, refresh_per_second=4,
                redirect_stdout=False, redirect_stderr=False,
            )
            self._task_id = self._progress.add_task("starting", total=self.state.rounds)
            self._progress.start()
        capture = _Capture(self._log_file, self._on_line)
        root = logging.getLogger()
        handler = logging.StreamHandler(capture)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._saved = (sys.stdout, sys.stderr, root.handlers[:], root.level)
        root.handlers = [handler]
        root.setLevel(min(root.level or logging.INFO, logging.INFO))
        sys.stdout = sys.stderr = capture  # type: ignore[assignment]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        out, err, handlers, level = self._saved
        sys.stdout, sys.stderr = out, err
        root = logging.getLogger()
        root.handlers = handlers
        root.setLevel(level)
        if self._progress is not None:
            self._refresh()
            self._progress.stop()
            self._progress = None
        if self._log_file is not None:
            self._log_file.close()
        if exc is not None:
            self.print(f"[{self._elapsed()}] the run failed ({type(exc).__name__}: {exc}); the orchestrator's output is in {self.log_path}")
            tail = _tail(self.log_path, 15)
            if tail:
                self.print("last lines of the log:\n" + tail)


def _tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(_ANSI.sub("", x) for x in lines[-n:])


def _env_plain() -> bool:
    """Plain lines asked for even on a terminal (``CURE_PLAIN_CONSOLE=1``)."""
    return os.environ.get("CURE_PLAIN_CONSOLE", "") not in ("", "0")
