"""Evaluation reports: files written, every metric plotted, tables correct, HTML self-contained."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from cure.report import ReportInputError, format_round_table, normalize_history, write_report

PNG = b"\x89PNG\r\n\x1a\n"
KEYS = [
    "code_acc",
    "code_acc_accumulate",
    "unit_test_acc",
    "unit_test_acc_accumulate",
    "p01",
    "p00",
    "bon_4x4",
    "bon_16x16",
]


def _metrics(r: int, base: float) -> dict:
    return {k: round(base + 0.01 * i + 0.05 * r, 4) for i, k in enumerate(KEYS)}


def _history() -> list[dict]:
    hist = []
    for r in (0, 2, 4):
        held = {**_metrics(r, 0.2), "discriminative_test_share": 0.1 * (r + 1), "bon_32x32": 0.3 + 0.01 * r}
        hist.append(
            {
                "round": r,
                "benchmarks": {"synthetic_heldout": held, "humaneval": {"code_acc": 0.5 + 0.01 * r, "unit_test_acc": None}},
            }
        )
    hist[0]["benchmarks"]["synthetic_heldout"]["noise"] = {"code_acc": [0.20, 0.24], "unit_test_acc": 0.3}
    return hist


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_report(_history(), tmp_path_factory.mktemp("rep"), title="Demo <run>")


def test_report_files_and_every_metric_plotted(report: dict[str, Path]):
    paths = report
    metrics = [*KEYS[:6], "bon_4x4", "bon_16x16", "bon_32x32", "discriminative_test_share"]
    assert sorted(k for k in paths if k.startswith("plot/")) == sorted(f"plot/{m}" for m in metrics)
    for key in ["markdown", "html", "overview", *(f"plot/{m}" for m in metrics)]:
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
    for key, p in paths.items():
        if p.suffix == ".png":
            assert p.read_bytes().startswith(PNG), key
    md = paths["markdown"].read_text()
    # every image the Markdown links to sits next to it
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(linked) == sorted(["metrics.png", *(f"plot_{m}.png" for m in metrics)])
    assert all((paths["markdown"].parent / name).is_file() for name in linked)
    assert md.startswith("# Demo <run>") and "## Benchmark: synthetic_heldout" in md and "## Benchmark: humaneval" in md


def test_html_is_self_contained(report: dict[str, Path]):
    paths = report
    page = paths["html"].read_text()
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 1 + len([k for k in paths if k.startswith("plot/")])
    for alt, data in images:
        assert base64.b64decode(data).startswith(PNG), alt
    assert base64.b64decode(images[1][1]) == paths["plot/code_acc"].read_bytes()
    assert not re.search(r'src="(?!data:)', page)  # no reference to files beside it
    assert "<title>Demo &lt;run&gt;</title>" in page and "<td>0.200</td>" in page


def test_round_table_content():
    text = format_round_table(_history())
    blocks = text.strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["benchmark: synthetic_heldout", "benchmark: humaneval"]
    rows = [line.split() for line in blocks[0].splitlines()[1:]]
    assert rows[0][:4] == ["round", "code_acc", "code_acc_accumulate", "unit_test_acc"]
    assert rows[0][-3:] == ["bon_16x16", "bon_32x32", "discriminative_test_share"]  # Best-of-N by scale
    cols = rows[0]
    by_round = {row[0]: dict(zip(cols, row)) for row in rows[2:]}
    assert set(by_round) == {"0", "2", "4", "noise"}
    assert by_round["0"]["code_acc"] == "0.200" and by_round["4"]["code_acc"] == "0.400"
    assert by_round["2"]["p00"] == "0.350" and by_round["4"]["discriminative_test_share"] == "0.500"
    # noise: samples [0.20, 0.24] -> sample std 0.0283; a number is taken as given; no noise -> "-"
    assert by_round["noise"]["code_acc"] == "±0.028" and by_round["noise"]["unit_test_acc"] == "±0.300"
    assert by_round["noise"]["p01"] == "-"
    # humaneval never reported unit_test_acc: the column is left out rather than filled with blanks
    he = [line.split() for line in blocks[1].splitlines()[1:]]
    assert he[0] == ["round", "code_acc"] and he[2:] == [["0", "0.500"], ["2", "0.520"], ["4", "0.540"]]


def test_flat_history_noise_argument_and_change_table(tmp_path: Path):
    flat = [{"round": r, **_metrics(r, 0.2), "model": f"ckpt-{r}"} for r in (3, 0, 6)]  # any order
    flat[1]["code_acc"] = None  # a missing value is a gap, not a zero
    noise = {"code_acc": 0.5, "unit_test_acc": [0.1, 0.1, 0.1], "p01": 0.01}
    text = format_round_table(flat, noise=noise)
    assert text.splitlines()[0] == "benchmark: default"
    rows = [line.split() for line in text.splitlines()[3:]]
    assert [r[0] for r in rows] == ["0", "3", "6", "noise"] and rows[0][1] == "-" and rows[3][1] == "±0.500"
    assert "model" not in text  # strings are metadata, not metrics

    md = write_report(flat, tmp_path, noise=noise)["markdown"].read_text()
    change = {
        cells[0].strip("| "): cells
        for line in md.splitlines()
        if line.startswith("| ") and len(cells := line.split(" | ")) == 6  # the first/last/change table
    }
    # code_acc: first value at round 3 (round 0 is missing), change +0.15 < noise 0.5 -> "no"
    assert [c.strip(" |") for c in change["code_acc"][1:]] == ["0.350 (r3)", "0.500 (r6)", "+0.150", "0.500", "no"]
    # unit_test_acc: +0.30 against noise 0 (identical repeats) -> "yes"; p00 has no noise -> "—"
    assert change["unit_test_acc"][-1].strip(" |") == "yes" and change["unit_test_acc"][-2] == "0.000"
    assert change["p00"][-1].strip(" |") == "—"


def test_noise_changes_only_its_plots(tmp_path: Path):
    hist = [{"round": r, "code_acc": 0.1 * r, "p00": 0.2} for r in (0, 1, 2)]
    a = write_report(hist, tmp_path / "a")
    b = write_report(hist, tmp_path / "b")
    c = write_report(hist, tmp_path / "c", noise={"code_acc": 0.05})
    assert a["plot/code_acc"].read_bytes() == b["plot/code_acc"].read_bytes()  # rendering is deterministic
    assert c["plot/code_acc"].read_bytes() != a["plot/code_acc"].read_bytes()  # the band / error bars drawn
    assert c["plot/p00"].read_bytes() == a["plot/p00"].read_bytes()


def test_extra_tables(tmp_path: Path):
    extra = {
        "Discriminative tests": [{"round": 0, "share": 0.25}, {"round": 4, "share": 0.5, "n": 12}],
        "Run": {"model": "tiny", "seconds": 812.5},
        "Notes": "two seeds for round 0",
    }
    paths = write_report([{"round": 0, "code_acc": 0.1}], tmp_path, extra_tables=extra)
    md = paths["markdown"].read_text()
    assert "## Discriminative tests\n\n| round | share | n |\n|---|---|---|\n| 0 | 0.250 | — |\n| 4 | 0.500 | 12 |" in md
    assert "| model | tiny |" in md and "| seconds | 812.500 |" in md and "two seeds for round 0" in md
    assert "<th>share</th>" in paths["html"].read_text()


def test_bad_history_is_named():
    with pytest.raises(ReportInputError, match=r"history\[1\]: 'round'"):
        normalize_history([{"round": 0, "code_acc": 0.1}, {"code_acc": 0.2}])
    with pytest.raises(ReportInputError, match="round 0 appears twice"):
        normalize_history([{"round": 0}, {"round": 0}])
    with pytest.raises(ReportInputError, match=r"history\[0\]\.noise\.code_acc"):
        normalize_history([{"round": 0, "code_acc": 0.1, "noise": {"code_acc": "big"}}])
    with pytest.raises(ReportInputError, match="history is empty"):
        format_round_table([])
