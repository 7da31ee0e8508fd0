"""Task records: the Stdio format of the datasets released with CURE, validation, and sources.

A task is one JSON object: ``task_id``, ``source``, ``question``, ``test_time_limit`` (seconds),
``example_input``/``example_output`` (public examples shown in prompts) and ``test_input``/``test_output``
(ground-truth tests), each a list of strings fed to / expected from the program's stdin/stdout. ``task_id`` is text:
an integer id (the reference's conversion writes them) becomes its decimal string. Other fields (the released
files' ``dataset``, ``solutions``, ``difficulty``, ``exe_method``) are kept in the record. A task with no
ground-truth test is *unlabeled*: label-free RL trains the coder on it (``reward.code_reward_source=generated_tests``);
ground-truth rewards and evaluation refuse it (:func:`require_labeled`).

Bad input never disappears silently: :func:`load_tasks` either rejects the whole file (``on_error="raise"``,
the default) naming the file, line (an item of a JSON array by the line it starts on) and field (a lone surrogate,
which UTF-8 cannot encode, included), or keeps the good rows and returns every bad row with its reason
(``on_error="skip"``), so the caller reports and counts them.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cure.validate import current_umask, read_records

OnError = Literal["raise", "skip"]


class Task(BaseModel):
    """One coding task in CURE's Stdio format."""

    model_config = ConfigDict(extra="allow")

    task_id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    question: str = Field(min_length=1)
    test_time_limit: float = Field(1.0, gt=0, le=3600)  # seconds; the sandbox's range (execute checks it too)
    example_input: list[str] = Field(default_factory=list)
    example_output: list[str] = Field(default_factory=list)
    test_input: list[str]
    test_output: list[str]

    @field_validator("task_id", mode="before")
    @classmethod
    def _id_text(cls, v: Any) -> Any:
        # The reference's conversion writes integer ids (data/transformation.ipynb: ``data_i["task_id"] = i``):
        # kept as their decimal string, so every later artifact carries the same stable text id.
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        return v

    @field_validator("test_time_limit", mode="before")
    @classmethod
    def _time_limit_number(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be a number of seconds, not a boolean")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite number of seconds in (0, 3600]")
        return v

    @model_validator(mode="after")
    def _paired(self) -> Task:
        if len(self.example_input) != len(self.example_output):
            raise ValueError(
                f"example_input has {len(self.example_input)} items but example_output has {len(self.example_output)}"
            )
        if len(self.test_input) != len(self.test_output):
            raise ValueError(f"test_input has {len(self.test_input)} items but test_output has {len(self.test_output)}")
        return self


class TaskFormatError(ValueError):
    """A task file or record is invalid. The message names the file, row, field and problem."""


def unlabeled(tasks: Iterable[Task]) -> list[str]:
    """The ids of the tasks without a ground-truth test."""
    return [t.task_id for t in tasks if not t.test_input]


def require_labeled(tasks: Iterable[Task], what: str, remedy: str = "") -> None:
    """Raise :class:`TaskFormatError` naming the tasks of ``what`` that have no ground-truth test."""
    bare = unlabeled(tasks)
    if bare:
        names = ", ".join(bare[:5]) + (f" and {len(bare) - 5} more" if len(bare) > 5 else "")
        raise TaskFormatError(f"{what}: {len(bare)} task(s) without ground-truth tests ({names})" + (f"; {remedy}" if remedy else ""))


@dataclass(frozen=True)
class BadRow:
    where: str  # "file:line"
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: field {self.field!r}: {self.problem}"


def _describe(e: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(record)"
        msg = err["msg"].removeprefix("Value error, ")
        out.append((loc, msg))
    return out


def _lone_surrogate(value: Any, path: str = "") -> tuple[str, int, str] | None:
    """The first string in ``value`` holding a lone surrogate (JSON ``"\\ud800"`` decodes to one; UTF-8 cannot
    encode it): (field path as pydantic names it, character index, the character), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return path or "(record)", e.start, value[e.start]
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            found = _lone_surrogate(k, path or "(record)") if isinstance(k, str) else None
            found = found or _lone_surrogate(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _lone_surrogate(v, f"{path}.{i}")
            if found:
                return found
    return None


def validate_record(record: Any, where: str) -> Task:
    """Validate one record; raise :class:`TaskFormatError` naming ``where`` (file:row), the field and the problem."""
    if not isinstance(record, dict):
        raise TaskFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    surrogate = _lone_surrogate(record)
    if surrogate:
        field, at, ch = surrogate
        raise TaskFormatError(f"{where}: field {field!r}: holds a lone surrogate ({ascii(ch)} at character {at}), "
                              "which is not a Unicode character and cannot be written as UTF-8")
    try:
        return Task.model_validate(record)
    except ValidationError as e:
        problems = "; ".join(f"field {f!r}: {m}" for f, m in _describe(e))
        raise TaskFormatError(f"{where}: {problems}") from e


_WS = re.compile(r"[ \t\n\r]*")


def _iter_json_list(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    """Yield (where, item) from a JSON array, ``where`` naming the line the item starts on (the released files
    are one indented JSON array: ``file:LINE (item I)``). Invalid JSON anywhere rejects the whole file."""
    decoder = json.JSONDecoder()
    line, counted = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, pos)
        counted = pos
        return line

    def bad(pos: int, msg: str) -> TaskFormatError:
        return TaskFormatError(f"{path}:{line_at(pos)}: not valid JSON: {msg}")

    pos = _WS.match(text).end()
    if not text.startswith("[", pos):
        raise bad(pos, "expected '[' (a JSON array of task objects)")
    pos = _WS.match(text, pos + 1).end()
    items: list[tuple[str, Any]] = []  # parsed in full first: a syntax error rejects the file before any row
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            try:
                item, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                raise TaskFormatError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
            items.append((f"{path}:{line_at(pos)} (item {len(items)})", item))
            pos = _WS.match(text, end).end()
            if text.startswith(",", pos):
                pos = _WS.match(text, pos + 1).end()
            elif text.startswith("]", pos):
                pos += 1
                break
            else:
                raise bad(pos, "expected ',' or ']' after an item")
    pos = _WS.match(text, pos).end()
    if pos != len(text):
        raise bad(pos, "extra data after the array")
    yield from items


def _iter_raw(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield (where, record) from a JSON list file or a JSON Lines file."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise TaskFormatError(f"{path}:{line}: not valid UTF-8; task files must be UTF-8") from None
    if text.lstrip().startswith("["):
        yield from _iter_json_list(path, text)
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except json.JSONDecodeError as e:
            yield f"{path}:{lineno}", _JsonError(e.msg)


@dataclass
class _JsonError:
    msg: str


def _fill_ids(record: Any, default_source: str, index: int, id_prefix: str | None = None) -> Any:
    """The record with ``source`` (default ``default_source``) and a text ``task_id``: its own id (an integer, as in
    the reference's released files, becomes its decimal string), prefixed ``id_prefix/`` when given (unless it
    already is); without one, ``<id_prefix or source>/<index>``."""
    if isinstance(record, dict):
        record = dict(record)
        if record.get("source") is None:
            record["source"] = default_source
        tid = record.get("task_id")
        if tid is None:
            record["task_id"] = f"{id_prefix or record['source']}/{index}"
        elif id_prefix and isinstance(tid, (int, str)) and not isinstance(tid, bool) and str(tid) \
                and not str(tid).startswith(f"{id_prefix}/"):  # an already prepared file keeps its ids
            record["task_id"] = f"{id_prefix}/{tid}"
    return record


def load_tasks(
    path: str | Path, on_error: OnError = "raise", source: str | None = None, id_prefix: str | None = None
) -> tuple[list[Task], list[BadRow]]:
    """Load and validate a CURE-format JSON or JSONL file.

    Records without ``source`` get ``source`` (default: the file's stem). Ids: a record's own ``task_id``
    (string or integer, kept as text), prefixed ``<id_prefix>/`` when given; records without one get
    ``<id_prefix or source>/<index>``. Other fields (the released files' ``dataset``, ``solutions``,
    ``difficulty``, ``exe_method``) are kept in the task record. ``on_error="raise"`` rejects the whole file at
    the first bad row; ``"skip"`` keeps the good rows and returns the bad ones, which the caller must report.
    """
    p = Path(path)
    if not p.is_file():
        raise TaskFormatError(f"{p}: no such file")
    tasks: list[Task] = []
    bad: list[BadRow] = []
    seen: dict[str, str] = {}
    for index, (where, raw) in enumerate(_iter_raw(p)):
        try:
            if isinstance(raw, _JsonError):
                raise TaskFormatError(f"{where}: not valid JSON: {raw.msg}")
            task = validate_record(_fill_ids(raw, source or p.stem, index, id_prefix), where)
            if task.task_id in seen:
                raise TaskFormatError(f"{where}: field 'task_id': duplicate {task.task_id!r} (first at {seen[task.task_id]})")
            seen[task.task_id] = where
            tasks.append(task)
        except TaskFormatError as e:
            if on_error == "raise":
                raise
            msg = str(e).removeprefix(f"{where}: ")
            field = msg.split("'")[1] if msg.startswith("field '") else "(record)"
            bad.append(BadRow(where, field, msg.removeprefix(f"field {field!r}: ")))
    return tasks, bad


def write_jsonl(path: str | Path, records: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Write records as JSON Lines atomically (temp file + rename): a crash never leaves a half-written artifact."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for rec in records:
                obj = rec.model_dump(mode="json") if isinstance(rec, BaseModel) else rec
                f.write(json.dumps(obj, ensure_ascii=False) + "\n")
                n += 1
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; an artifact gets the mode any new file gets
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON Lines artifact (UTF-8, one JSON object per line); a bad line raises naming the file and line.

    The returned list is a :class:`cure.validate.Records`, which remembers each record's line for later checks.
    """
    return read_records(path)


# --- Hugging Face datasets -------------------------------------------------------------------------------


def load_hf_tasks(
    name_or_path: str, split: str = "train", on_error: OnError = "raise", source: str | None = None
) -> tuple[list[Task], list[BadRow]]:
    """Load tasks from a Hugging Face dataset: a ``save_to_disk`` folder, a local data file, or a hub name.

    The rows must carry CURE's Stdio fields (as the datasets released with CURE do).
    """
    import datasets

    p = Path(name_or_path)
    if p.is_dir() and (p / "dataset_dict.json").exists() or (p / "state.json").exists():
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise TaskFormatError(f"{p}: no split {split!r} (has: {', '.join(ds)})")
            ds = ds[split]
    elif p.is_file():
        fmt = "json" if p.suffix in (".json", ".jsonl") else p.suffix.lstrip(".")
        ds = datasets.load_dataset(fmt, data_files=str(p), split="train")
    else:
        try:
            ds = datasets.load_dataset(name_or_path, split=split)
        except Exception as e:  # network or hub errors: say what to do
            raise TaskFormatError(
                f"could not load dataset {name_or_path!r} split {split!r} from the hub ({type(e).__name__}: {e}); "
                "without a network, pass a local save_to_disk folder or data file instead"
            ) from e
    src = source or p.name or name_or_path
    tasks: list[Task] = []
    bad: list[BadRow] = []
    for i, row in enumerate(ds):
        where = f"{name_or_path}[{split}] row {i}"
        try:
            tasks.append(validate_record(_fill_ids(dict(row), src, i), where))
        except TaskFormatError as e:
            if on_error == "raise":
                raise
            bad.append(BadRow(where, "(record)", str(e).removeprefix(f"{where}: ")))
    return tasks, bad
