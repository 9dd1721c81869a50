"""caption.py's output: one record per photo in JSON Lines or CSV, appended batch by batch, so a run
that is killed can be started again and goes on where it stopped.

On opening, the records already in the file are read back: a last line cut off by the kill (no
newline at its end) is dropped, a photo recorded twice keeps its first record, and the file is
rewritten cleanly (atomically) before new records are appended.
"""
import csv
import io
import json
import os
from pathlib import Path

from .files import atomic_path

# Paths are whatever bytes the file system holds; those that are not UTF-8 survive the round trip.
ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}


class RecordFileError(ValueError):
    """The output file cannot be resumed: not ours, or written with other fields."""


class JsonLines:
    suffix = ".jsonl"

    @staticmethod
    def parse(text: str, fields: list[str], path: Path) -> list[dict]:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise RecordFileError(f"{path}, line {number}: not JSON ({error.msg}); is it another file?") from None
            if not isinstance(record, dict) or list(record) != fields:
                raise RecordFileError(f"{path}, line {number}: its fields are not {', '.join(fields)}: it was "
                                      "written with other options (or is another file); use another --out")
            records.append(record)
        return records

    @staticmethod
    def header(fields: list[str]) -> str:
        return ""

    @staticmethod
    def format(records: list[dict], fields: list[str]) -> str:
        return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


class Csv:
    """One column per field; a list (the n-best captions) is a JSON array in its cell, None is empty."""
    suffix = ".csv"

    @staticmethod
    def parse(text: str, fields: list[str], path: Path) -> list[dict]:
        rows = list(csv.reader(io.StringIO(text, newline="")))
        if not rows:
            return []
        if rows[0] != fields:
            raise RecordFileError(f"{path}: its columns are {', '.join(rows[0])}, not {', '.join(fields)}: it was "
                                  "written with other options (or is another file); use another --out")
        return [dict(zip(fields, row)) for row in rows[1:]]

    @staticmethod
    def header(fields: list[str]) -> str:
        return Csv.format([dict(zip(fields, fields))], fields)

    @staticmethod
    def format(records: list[dict], fields: list[str]) -> str:
        out = io.StringIO(newline="")
        writer = csv.writer(out)
        for record in records:
            writer.writerow("" if record[f] is None else json.dumps(record[f], ensure_ascii=False)
                            if isinstance(record[f], (list, dict)) else record[f] for f in fields)
        return out.getvalue()


FORMATS = {f.suffix: f for f in (JsonLines, Csv)}


def format_of(path: Path):
    try:
        return FORMATS[Path(path).suffix.lower()]
    except KeyError:
        raise RecordFileError(f"{path}: the output's name must end in {' or '.join(FORMATS)} (its format)") from None


def _read_complete(path: Path) -> str:
    """The file's text up to its last newline: what a killed run had finished writing."""
    text = path.read_text(**ENCODING) if path.exists() else ""
    return text[:text.rfind("\n") + 1]


class RecordFile:
    """An output file of records that this run appends to; `done` holds the photos recorded already
    (as real paths, so a photo reached by another path or a link still counts)."""

    def __init__(self, path: str | Path, fields: list[str]):
        self.path, self.fields, self.format = Path(path), fields, format_of(path)
        records, seen = [], set()
        for record in self.format.parse(_read_complete(self.path), fields, self.path):
            identity = os.path.realpath(record["path"])
            if identity not in seen:
                seen.add(identity)
                records.append(record)
        self.done, self.recorded = seen, len(records)
        with atomic_path(self.path) as tmp:
            tmp.write_text(self.format.header(fields) + self.format.format(records, fields), newline="", **ENCODING)
        self._file = open(self.path, "a", newline="", **ENCODING)

    def is_done(self, path: str) -> bool:
        return os.path.realpath(path) in self.done

    def write(self, records: list[dict]) -> None:
        """Append `records` and flush them, so a kill loses at most the batch being written."""
        self._file.write(self.format.format(records, self.fields))
        self._file.flush()
        self.recorded += len(records)

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
