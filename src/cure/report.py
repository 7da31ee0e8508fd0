"""Evaluation reports: every metric across rounds, as Markdown, self-contained HTML and PNG plots.

The input is the round history the pipeline keeps: one object per evaluated round. Two shapes are accepted,
and may be mixed:

* several benchmarks: ``{"round": 3, "benchmarks": {"synthetic_heldout": {...}, "humaneval": {...}}}``;
* one benchmark, flat: ``{"round": 3, "code_acc": 0.41, ...}`` (named by its ``benchmark`` key, else
  ``"default"``).

A benchmark's metrics are the numeric keys of :func:`cure.metrics.summarize` (``code_acc``, ``unit_test_acc``,
``p01``, ``p00``, ``bon_4x4``, ...) plus anything else numeric (e.g. ``discriminative_test_share``); other
values (strings, lists) are metadata and are not plotted.

Evaluation noise, i.e. how much a metric moves between repeated evaluations of the same model, decides whether
a change across rounds means anything, so it is drawn on every plot (error bars, and a band around the first
round's value) and listed in the tables. It comes from the ``noise`` argument or from a ``noise`` key in the
history (flat entries: ``{"noise": {...}}``; per benchmark: ``"benchmarks": {"b": {..., "noise": {...}}}``).
A noise spec maps metric -> half-width (a number) or metric -> repeated measurements (a list; its sample
standard deviation is used); ``{benchmark: {metric: ...}}`` gives it per benchmark.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_BENCHMARK = "default"
_RESERVED = {"round", "benchmark", "benchmarks", "noise"}

METRIC_ORDER = [
    "code_acc",
    "code_acc_accumulate",
    "unit_test_acc",
    "unit_test_acc_accumulate",
    "p01",
    "p00",
]
METRIC_HELP = {
    "code_acc": "one-shot code accuracy: share of sampled programs that pass every ground-truth test",
    "code_acc_accumulate": "share of (program, ground-truth test) pairs that pass",
    "unit_test_acc": "unit-test accuracy: share of generated tests that every correct program passes",
    "unit_test_acc_accumulate": "share of (correct program, generated test) pairs that pass",
    "p01": "share of (wrong program, correct test) pairs where the wrong program passes (lower is better)",
    "p00": "share of (wrong program, wrong test) pairs where the wrong program passes",
    "discriminative_test_share": "share of correct generated tests that reject at least one wrong program",
}
_BON = re.compile(r"^bon_(\d+)x(\d+)$")


class ReportInputError(ValueError):
    """The history or noise given to the report is malformed; the message names the entry and field."""


def metric_help(name: str) -> str:
    if name in METRIC_HELP:
        return METRIC_HELP[name]
    if m := _BON.match(name):
        return f"Best-of-N accuracy with {m[1]} programs ranked by {m[2]} generated tests"
    return ""


def _metric_sort_key(name: str) -> tuple:
    if name in METRIC_ORDER:
        return (0, METRIC_ORDER.index(name))
    if m := _BON.match(name):
        return (1, int(m[1]), int(m[2]))
    if name == "discriminative_test_share":
        return (2,)
    return (3, name)


# How the store writes a non-finite number in standard JSON (cure.store.json_safe), and what older files hold.
_NONFINITE = {"NaN": math.nan, "nan": math.nan, "Infinity": math.inf, "inf": math.inf, "-Infinity": -math.inf,
              "-inf": -math.inf}


def _value(v: Any) -> float | None:
    """A recorded number, non-finite ones included (NaN, infinities: written as text or as JSON's non-standard
    literals); None when missing or not a number."""
    if isinstance(v, str):
        return _NONFINITE.get(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _number(v: Any) -> float | None:
    """A plottable value, or None for missing / non-numeric / non-finite."""
    v = _value(v)
    return v if v is not None and math.isfinite(v) else None


def _noise_value(v: Any, where: str) -> float:
    if isinstance(v, bool):
        raise ReportInputError(f"{where}: noise must be a number or a list of numbers, not a boolean")
    if isinstance(v, (int, float)):
        if not math.isfinite(v) or v < 0:
            raise ReportInputError(f"{where}: noise must be a finite number >= 0, got {v!r}")
        return float(v)
    if isinstance(v, Sequence) and not isinstance(v, str):
        xs = [_number(x) for x in v]
        if not xs or any(x is None for x in xs):
            raise ReportInputError(f"{where}: noise samples must be a non-empty list of numbers, got {v!r}")
        if len(xs) == 1:
            return 0.0
        mean = sum(xs) / len(xs)
        return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    raise ReportInputError(f"{where}: noise must be a number or a list of numbers, got {type(v).__name__}")


def _noise_spec(spec: Any, benchmarks: Sequence[str], where: str) -> dict[str, dict[str, float]]:
    """Normalise a noise spec to {benchmark: {metric: half-width}}."""
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise ReportInputError(f"{where}: noise must be a mapping, got {type(spec).__name__}")
    out: dict[str, dict[str, float]] = {}
    for k, v in spec.items():
        if isinstance(v, Mapping):
            out.setdefault(str(k), {}).update(
                {str(m): _noise_value(x, f"{where}.{k}.{m}") for m, x in v.items()}
            )
        else:
            val = _noise_value(v, f"{where}.{k}")
            for b in benchmarks:
                out.setdefault(b, {})[str(k)] = val
    return out


@dataclass
class Round:
    round: int
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)  # benchmark -> metric -> value
    noise: dict[str, dict[str, float]] = field(default_factory=dict)  # benchmark -> metric -> half-width


def normalize_history(history: Sequence[Mapping[str, Any]]) -> list[Round]:
    """Parse both history shapes into rounds sorted by round number; errors name the entry and field."""
    if isinstance(history, Mapping) or not isinstance(history, Sequence):
        raise ReportInputError(f"history must be a list of per-round objects, got {type(history).__name__}")
    rounds: dict[int, Round] = {}
    for i, entry in enumerate(history):
        where = f"history[{i}]"
        if not isinstance(entry, Mapping):
            raise ReportInputError(f"{where} must be an object, got {type(entry).__name__}")
        r = entry.get("round")
        if isinstance(r, bool) or not isinstance(r, int):
            raise ReportInputError(f"{where}: 'round' must be an integer, got {r!r}")
        rnd = Round(r)
        if "benchmarks" in entry:
            benches = entry["benchmarks"]
            if not isinstance(benches, Mapping) or not benches:
                raise ReportInputError(f"{where}.benchmarks must be a non-empty object of benchmark -> metrics")
            for name, metrics in benches.items():
                if not isinstance(metrics, Mapping):
                    raise ReportInputError(f"{where}.benchmarks.{name} must be an object of metrics")
                rnd.metrics[str(name)] = {
                    str(k): _value(v) for k, v in metrics.items() if k not in _RESERVED and _is_metric(v)
                }
                if "noise" in metrics:
                    if not isinstance(metrics["noise"], Mapping):
                        raise ReportInputError(f"{where}.benchmarks.{name}.noise must be an object of metric -> noise")
                    spec = _noise_spec({name: metrics["noise"]}, [], f"{where}.benchmarks")
                    rnd.noise.setdefault(str(name), {}).update(spec.get(str(name), {}))
        else:
            name = str(entry.get("benchmark") or DEFAULT_BENCHMARK)
            rnd.metrics[name] = {str(k): _value(v) for k, v in entry.items() if k not in _RESERVED and _is_metric(v)}
        for b, spec in _noise_spec(entry.get("noise"), list(rnd.metrics), f"{where}.noise").items():
            rnd.noise.setdefault(b, {}).update(spec)
        if r in rounds:
            raise ReportInputError(f"{where}: round {r} appears twice in the history")
        rounds[r] = rnd
    return [rounds[r] for r in sorted(rounds)]


def _is_metric(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) or (isinstance(v, str) and v in _NONFINITE)


@dataclass
class _Table:
    """Everything the outputs need, computed once."""

    rounds: list[Round]
    benchmarks: list[str]
    metrics: list[str]
    noise: dict[str, dict[str, float]]  # benchmark -> metric -> half-width (explicit, else earliest in history)

    def series(self, bench: str, metric: str) -> tuple[list[int], list[float | None], list[float | None]]:
        xs, ys, es = [], [], []
        for r in self.rounds:
            if bench in r.metrics:
                xs.append(r.round)
                ys.append(r.metrics[bench].get(metric))
                es.append(r.noise.get(bench, {}).get(metric, self.noise.get(bench, {}).get(metric)))
        return xs, ys, es

    def first_last(self, bench: str, metric: str) -> tuple[tuple[int, float] | None, tuple[int, float] | None]:
        """The first and last recorded values; a non-finite one counts (it is shown flagged, never skipped)."""
        pts = [(x, y) for x, y, _ in zip(*self.series(bench, metric)) if y is not None]
        return (pts[0], pts[-1]) if pts else (None, None)

    def nonfinite(self) -> list[str]:
        """``benchmark metric (rounds ...)`` for every metric with a NaN or infinite value."""
        out = []
        for b in self.benchmarks:
            for m in self.metrics:
                bad = [str(r.round) for r in self.rounds if (v := r.metrics.get(b, {}).get(m)) is not None
                       and not math.isfinite(v)]
                if bad:
                    out.append(f"{b} {m} (round{'s' if len(bad) > 1 else ''} {', '.join(bad)})")
        return out


def _build(history: Sequence[Mapping[str, Any]], noise: Mapping[str, Any] | None) -> _Table:
    rounds = normalize_history(history)
    if not rounds:
        raise ReportInputError("history is empty: evaluate at least one round before writing a report")
    benchmarks = list(dict.fromkeys(b for r in rounds for b in r.metrics))
    metrics = sorted({m for r in rounds for ms in r.metrics.values() for m in ms}, key=_metric_sort_key)
    merged: dict[str, dict[str, float]] = {}
    for r in rounds:  # earliest round that reports a metric's noise sets it
        for b, spec in r.noise.items():
            for m, v in spec.items():
                merged.setdefault(b, {}).setdefault(m, v)
    for b, spec in _noise_spec(noise, benchmarks, "noise").items():
        merged.setdefault(b, {}).update(spec)
    return _Table(rounds, benchmarks, metrics, merged)


NONFINITE_MARK = "!"  # after nan / inf / -inf in tables: a non-finite value the run recorded, not a missing one


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "—"
    return f"{v:.{digits}f}" if math.isfinite(v) else f"{v}{NONFINITE_MARK}"


def _fmt_noise(v: float | None) -> str:
    return "" if v is None else f"±{v:.3f}"


# ---- plain text -----------------------------------------------------------------------------------------
def format_round_table(history: Sequence[Mapping[str, Any]], noise: Mapping[str, Any] | None = None) -> str:
    """A per-round table for the terminal: one block per benchmark, a row per round, a column per metric."""
    t = _build(history, noise)
    blocks = []
    for b in t.benchmarks:
        metrics = [m for m in t.metrics if any(r.metrics.get(b, {}).get(m) is not None for r in t.rounds)]
        header = ["round", *metrics]
        rows = []
        for r in t.rounds:
            if b in r.metrics:
                rows.append([str(r.round), *(_fmt(r.metrics[b].get(m)).replace("—", "-") for m in metrics)])
        bnoise = t.noise.get(b, {})
        if any(m in bnoise for m in metrics):
            rows.append(["noise", *(_fmt_noise(bnoise.get(m)) or "-" for m in metrics)])
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = [f"benchmark: {b}"]
        lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


# ---- plots ----------------------------------------------------------------------------------------------
def _plot_metric(t: _Table, metric: str, path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    _draw(ax, t, metric, legend=True)
    fig.savefig(path, format="png")
    return path


def _draw(ax: Any, t: _Table, metric: str, legend: bool) -> None:
    colors = [f"C{i}" for i in range(10)]
    band_labelled = False
    for i, b in enumerate(t.benchmarks):
        xs, ys, es = t.series(b, metric)
        pts = [(x, y, e) for x, y, e in zip(xs, ys, es) if y is not None and math.isfinite(y)]
        if not pts:
            continue
        c = colors[i % len(colors)]
        px, py, pe = zip(*pts)
        yerr = [e or 0.0 for e in pe]
        ax.errorbar(px, py, yerr=yerr if any(yerr) else None, color=c, marker="o", ms=4, capsize=3, label=b)
        base_noise = t.noise.get(b, {}).get(metric)
        if base_noise:
            x0, y0 = px[0], py[0]
            lo, hi = min(xs), max(xs)
            if lo == hi:
                lo, hi = lo - 0.5, hi + 0.5
            ax.fill_between([lo, hi], y0 - base_noise, y0 + base_noise, color=c, alpha=0.12, lw=0)
            ax.axhline(y0, color=c, ls="--", lw=0.8, alpha=0.6)
            if legend and not band_labelled:
                ax.plot([], [], color="grey", ls="--", lw=0.8, label=f"round {x0} ± noise")
                band_labelled = True
    ax.set_title(metric, fontsize=10)
    ax.set_xlabel("round")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8, loc="best")


def _plot_overview(t: _Table, path: Path) -> Path:
    from matplotlib.figure import Figure

    n = len(t.metrics)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), dpi=90, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, metric in enumerate(t.metrics):
        _draw(axes[k // cols][k % cols], t, metric, legend=k == 0)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.savefig(path, format="png")
    return path


def _safe_name(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", metric)


# ---- training curves (every round, not just the evaluated ones) -----------------------------------------
# (panel title, [(label, step, key)]): keys of the metrics dicts that cure.stages returns.
TRAINING_PANELS = [
    ("mean reward (raw)", [("coder", "reward", "coder_reward_mean"), ("tester", "reward", "tester_reward_mean")]),
    ("pass rates on the round's tasks", [("code_acc", "execute", "train_code_acc"),
                                         ("unit_test_acc", "execute", "train_unit_test_acc")]),
    ("training loss", [("loss", "train", "loss")]),
    ("KL to the reference", [("kl", "train", "kl")]),
]


def _training_rows(rounds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validate the per-round list and sort it by round."""
    if isinstance(rounds, (str, bytes)) or not isinstance(rounds, Sequence):
        raise ReportInputError(f"rounds must be a list of objects (one per training round), got {type(rounds).__name__}")
    rows = []
    for i, r in enumerate(rounds):
        if not isinstance(r, Mapping):
            raise ReportInputError(f"rounds[{i}] must be an object, got {type(r).__name__}")
        rnd = r.get("round")
        if isinstance(rnd, bool) or not isinstance(rnd, int):
            raise ReportInputError(f"rounds[{i}].round must be an integer, got {rnd!r}")
        for step in ("rollout", "execute", "reward", "train", "seconds"):
            if r.get(step) is not None and not isinstance(r[step], Mapping):
                raise ReportInputError(f"rounds[{i}].{step} must be an object of metrics, got {type(r[step]).__name__}")
        rows.append(dict(r))
    return sorted(rows, key=lambda r: r["round"])


def _training_value(r: Mapping[str, Any], step: str, key: str) -> float | None:
    return _value((r.get(step) or {}).get(key))


def _plot_training(rows: list[dict[str, Any]], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * 2, 3.0 * 2), dpi=90, layout="constrained")
    axes = fig.subplots(2, 2, squeeze=False)
    for k, (title, series) in enumerate(TRAINING_PANELS):
        ax = axes[k // 2][k % 2]
        for j, (label, step, key) in enumerate(series):
            pts = [(r["round"], v) for r in rows if (v := _training_value(r, step, key)) is not None and math.isfinite(v)]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", ms=3, color=f"C{j}", label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8, loc="best")
    fig.savefig(path, format="png")
    return path


def _training_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    cols = [(label if step != "execute" else f"train {label}", step, key) for _, series in TRAINING_PANELS
            for label, step, key in series]
    cols = [(f"{lbl} reward" if step == "reward" else lbl, step, key) for lbl, step, key in cols]
    header = ["round", *(c[0] for c in cols), "seconds"]
    body = []
    for r in rows:
        secs = r.get("seconds") or {}
        total = sum(v for v in secs.values() if _number(v) is not None) if isinstance(secs, Mapping) else None
        body.append([str(r["round"]), *(_fmt(_training_value(r, s, k), 4) for _, s, k in cols), _fmt(total, 1) if secs else "—"])
    return header, body


# ---- tables ---------------------------------------------------------------------------------------------
def _round_rows(t: _Table, b: str) -> tuple[list[str], list[list[str]]]:
    metrics = [m for m in t.metrics if any(r.metrics.get(b, {}).get(m) is not None for r in t.rounds)]
    rows = [[str(r.round), *(_fmt(r.metrics[b].get(m)) for m in metrics)] for r in t.rounds if b in r.metrics]
    bnoise = t.noise.get(b, {})
    if any(m in bnoise for m in metrics):
        rows.append(["noise (±)", *(_fmt(bnoise.get(m)) if m in bnoise else "—" for m in metrics)])
    return ["round", *metrics], rows


def _change_rows(t: _Table, b: str) -> tuple[list[str], list[list[str]]]:
    header = ["metric", "first", "last", "change", "noise (±)", "change beyond noise"]
    rows = []
    for m in t.metrics:
        first, last = t.first_last(b, m)
        if first is None or last is None:
            continue
        delta = last[1] - first[1]
        nz = t.noise.get(b, {}).get(m)
        if not math.isfinite(delta):
            change, beyond = f"non-finite{NONFINITE_MARK}", "—"
        else:
            change, beyond = f"{delta:+.3f}", "—" if nz is None else ("yes" if abs(delta) > nz else "no")
        rows.append([m, f"{_fmt(first[1])} (r{first[0]})", f"{_fmt(last[1])} (r{last[0]})", change, _fmt(nz), beyond])
    return header, rows


def _extra(table: Any, name: str) -> tuple[list[str], list[list[str]]] | str:
    """An extra table: rows (list of objects), a key -> value object, or preformatted text."""
    if isinstance(table, str):
        return table
    if isinstance(table, Mapping):
        return ["name", "value"], [[str(k), _cell(v)] for k, v in table.items()]
    if isinstance(table, Sequence) and all(isinstance(r, Mapping) for r in table):
        if not table:
            return "(no rows)"
        cols = list(dict.fromkeys(k for r in table for k in r))
        return [str(c) for c in cols], [[_cell(r.get(c)) for c in cols] for r in table]
    raise ReportInputError(f"extra_tables[{name!r}] must be a list of objects, an object, or text")


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return _fmt(v)
    return str(v)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
    "td:first-child,th:first-child{text-align:left}img{max-width:100%}figure{margin:1em 0}"
    "pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}"
)


# ---- the report -----------------------------------------------------------------------------------------
def write_report(
    history: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    title: str = "CURE evaluation report",
    noise: Mapping[str, Any] | None = None,
    extra_tables: Mapping[str, Any] | None = None,
    rounds: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` (plots embedded), ``metrics.png`` and ``plot_<metric>.png``.

    ``rounds``: one object per training round, ``{"round": r, "rollout": {...}, "execute": {...}, "reward": {...},
    "train": {...}, "seconds": {...}}`` (the metrics each step of :mod:`cure.stages` returned); when given, the
    report also plots the training curves of every round (``training.png``: mean raw coder and tester reward,
    pass rates on the round's tasks, loss, KL) and lists them in a table.

    Returns the paths: ``markdown``, ``html``, ``overview``, ``plot/<metric>`` for every metric, and
    ``training`` when ``rounds`` is given.
    """
    t = _build(history, noise)
    train_rows = _training_rows(rounds) if rounds is not None else []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"overview": _plot_overview(t, out / "metrics.png")}
    for m in t.metrics:
        paths[f"plot/{m}"] = _plot_metric(t, m, out / f"plot_{_safe_name(m)}.png")
    if train_rows:
        paths["training"] = _plot_training(train_rows, out / "training.png")

    first, last = t.rounds[0].round, t.rounds[-1].round
    intro = (
        f"{len(t.rounds)} evaluated rounds ({first} to {last}), benchmarks: {', '.join(t.benchmarks)}. "
        "Noise is the spread of a metric between repeated evaluations of the same model; plots show it as "
        "error bars and as a band around the first round's value."
    )
    if bad := t.nonfinite():
        intro += (f" Non-finite values (NaN or infinity), marked {NONFINITE_MARK} in the tables and left out of the "
                  f"plots: {'; '.join(bad)}.")
    sections: list[tuple[str, list[tuple[list[str], list[list[str]]] | str]]] = []
    for b in t.benchmarks:
        sections.append((f"Benchmark: {b}", [_change_rows(t, b), _round_rows(t, b)]))
    if train_rows:
        sections.append(("Training curves (every round)", [
            f"{len(train_rows)} training rounds. Rewards are the raw means before per-task normalisation (coder: "
            "ground-truth pass rate; tester: Eq. 4 where defined); pass rates are measured on each round's "
            "training tasks with the round's own samples.",
            _training_table(train_rows),
        ]))
    for name, table in (extra_tables or {}).items():
        sections.append((str(name), [_extra(table, str(name))]))
    glossary = [[m, metric_help(m)] for m in t.metrics if metric_help(m)]

    md = [f"# {title}", "", intro, "", "![all metrics](metrics.png)", ""]
    for heading, blocks in sections:
        md += [f"## {heading}", ""]
        for blk in blocks:
            md += [blk if isinstance(blk, str) else _md_table(*blk), ""]
    md += ["## Plots", ""]
    if train_rows:
        md += ["### training curves", "", "![training curves](training.png)", ""]
    for m in t.metrics:
        md += [f"### {m}", "", f"![{m}]({paths[f'plot/{m}'].name})", ""]
    if glossary:
        md += ["## Metrics", "", _md_table(["metric", "meaning"], glossary), ""]
    paths["markdown"] = out / "report.md"
    _atomic_write(paths["markdown"], "\n".join(md))

    def img(p: Path, alt: str) -> str:
        data = base64.b64encode(p.read_bytes()).decode()
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

    h = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>',
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(intro)}</p>",
        f"<figure>{img(paths['overview'], 'all metrics')}</figure>",
    ]
    for heading, blocks in sections:
        h.append(f"<h2>{html.escape(heading)}</h2>")
        for blk in blocks:
            h.append(f"<pre>{html.escape(blk)}</pre>" if isinstance(blk, str) else _html_table(*blk))
    h.append("<h2>Plots</h2>")
    if train_rows:
        h.append(f"<h3>training curves</h3><figure>{img(paths['training'], 'training curves')}</figure>")
    for m in t.metrics:
        h.append(f"<h3>{html.escape(m)}</h3><figure>{img(paths[f'plot/{m}'], m)}</figure>")
    if glossary:
        h += ["<h2>Metrics</h2>", _html_table(["metric", "meaning"], glossary)]
    h.append("</body></html>")
    paths["html"] = out / "report.html"
    _atomic_write(paths["html"], "\n".join(h) + "\n")
    return paths


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
