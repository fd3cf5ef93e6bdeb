"""The trial's output directory (DESIGN.md §3.2): results, checkpoints, params, errors.

Write order is what makes the directory safe to read while it grows:
- a checkpoint is built under a hidden temporary name and renamed when complete;
- the result line that names a checkpoint is appended only after that rename;
- each result line is written whole, and a failed or torn write never leaves half a line
  that the next one would glue onto (``kubetune.trial.lines``).
"""

from __future__ import annotations

import csv
import io
import json
import numbers
import os
import re
import shutil
from typing import Any

from kubetune._util import flatten_dict
from kubetune.trial.lines import LineAppender

RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.csv"
PARAMS_FILE = "params.json"
ERROR_FILE = "error.txt"
CHECKPOINT_PREFIX = "checkpoint_"
CHECKPOINT_RE = re.compile(r"^checkpoint_(\d{6,})$")
TMP_PREFIX = ".tmp_"


class ResultEncodingError(TypeError):
    """A reported value cannot be written as JSON; the message names the key."""


def _json_default(value: Any) -> Any:
    """Ray's handling of values plain JSON lacks: numpy/torch numbers and arrays."""
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # numpy arrays and scalars, torch tensors
        return tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _lenient_default(value: Any) -> Any:
    try:
        return _json_default(value)
    except TypeError:
        return str(value)


def json_safe(value: Any) -> Any:
    """A JSON round trip that stringifies what JSON cannot hold (for configs, as Ray does)."""
    return json.loads(json.dumps(value, default=_lenient_default))


def encode_result(result: dict[str, Any]) -> str:
    """One JSON line for result.json; NaN and infinities are written as Ray writes them."""
    try:
        return json.dumps(result, default=_json_default)
    except (TypeError, ValueError):
        pass
    for key, value in flatten_dict(result).items():
        try:
            json.dumps(value, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise ResultEncodingError(
                f"reported metric {key!r} has a value of type {type(value).__name__} that cannot"
                f" be written as JSON ({exc}); report numbers, strings, lists or dicts"
            ) from None
    raise ResultEncodingError("reported metrics cannot be written as JSON (non-string keys?)")


def checkpoint_name(index: int) -> str:
    return f"{CHECKPOINT_PREFIX}{index:06d}"


def existing_checkpoint_indices(out_dir: str) -> list[int]:
    try:
        names = os.listdir(out_dir)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := CHECKPOINT_RE.match(n)))


class OutputWriter:
    """Appends results and commits checkpoints in ``out_dir``."""

    def __init__(self, out_dir: str, checkpoint_index_start: int = 0) -> None:
        self.out_dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        existing = existing_checkpoint_indices(out_dir)
        self.next_checkpoint_index = max([checkpoint_index_start, *(i + 1 for i in existing)])
        self._results = LineAppender(os.path.join(out_dir, RESULT_FILE))
        progress_path = os.path.join(out_dir, PROGRESS_FILE)
        self._progress = LineAppender(progress_path)  # cuts a torn row before the header read
        self._csv_fields: list[str] | None = _read_csv_header(progress_path)
        # columns are those of the first result, later keys are left out (as Ray does)
        self._row = io.StringIO()
        self._csv = csv.writer(self._row)

    # -- results ----------------------------------------------------------------------------
    def append(self, line: str, result: dict[str, Any]) -> None:
        """Append one encoded result line (from encode_result) and its progress.csv row."""
        self._results.append(line + "\n")
        # the hot path of session.report: flatten only what is nested (config is left out)
        flat: dict[str, Any] = {}
        for key, value in result.items():
            if key == "config":
                continue
            if isinstance(value, dict) and value:
                flat.update(flatten_dict({key: value}))
            else:
                flat[key] = value
        self._row.seek(0)
        self._row.truncate()
        if self._csv_fields is None:
            self._csv_fields = list(flat)
            self._csv.writerow(self._csv_fields)
        self._csv.writerow([flat.get(k, "") for k in self._csv_fields])
        self._progress.append(self._row.getvalue())

    def write_params(self, config: dict[str, Any]) -> None:
        _atomic_write(os.path.join(self.out_dir, PARAMS_FILE), json.dumps(config, indent=2))

    def write_error(self, text: str) -> None:
        _atomic_write(os.path.join(self.out_dir, ERROR_FILE), text)

    # -- checkpoints ------------------------------------------------------------------------
    def reserve_checkpoint(self) -> tuple[str, str]:
        """A fresh temporary directory and the final name it will be committed under."""
        name = checkpoint_name(self.next_checkpoint_index)
        tmp = os.path.join(self.out_dir, f"{TMP_PREFIX}{name}")
        shutil.rmtree(tmp, ignore_errors=True)
        return tmp, name

    def commit_checkpoint(self, tmp: str, name: str) -> str:
        final = os.path.join(self.out_dir, name)
        os.rename(tmp, final)
        self.next_checkpoint_index += 1
        return final

    def close(self) -> None:
        for f in (self._results, self._progress):
            try:
                f.close()
            except OSError:
                pass


def _read_csv_header(path: str) -> list[str] | None:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), None)
    except FileNotFoundError:
        return None
    return header or None


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
