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
import re
from pathlib import Path

from .files import atomic_path

# Files are UTF-8. Paths are whatever bytes the file system holds: Python reads a byte that is not
# UTF-8 as a lone surrogate U+DC80..U+DCFF (surrogateescape), and the records write it as that
# escape, \udcXX, which os.fsencode turns back into the byte. Files written before that held the
# raw byte, and still read.
ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}
# Characters a JSON string may hold raw but that are written escaped: lone surrogates (above), and
# the line separators U+0085, U+2028 and U+2029 that some JSON Lines readers split lines at.
_ESCAPED_IN_JSON = re.compile("[\u0085\u2028\u2029\ud800-\udfff]")
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV Injection"):
# such a cell is written behind a "'", and so is one that starts with "'", so that reading drops it.
_FORMULA_STARTS = tuple("=+-@\t\r'")


def to_json(value) -> str:
    """`value` as one line of JSON, in UTF-8 wherever it can be (see _ESCAPED_IN_JSON)."""
    return _ESCAPED_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", json.dumps(value, ensure_ascii=False))


def _has_undecodable_bytes(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


class RecordFileError(ValueError):
    """The output file cannot be resumed: not ours, or written with other fields."""


class JsonLines:
    suffix = ".jsonl"

    @staticmethod
    def parse(text: str, fields: list[str], path: Path) -> list[dict]:
        records = []
        # lines end at "\n" only: str.splitlines would also split at U+2028 and others inside a name
        for number, line in enumerate(text.split("\n")[:-1], 1):
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
        return "".join(to_json(record) + "\n" for record in records)


class Csv:
    """One column per field; a list (the n-best captions) is a JSON array in its cell, None is empty.

    A text that a spreadsheet would run as a formula is written behind a "'" (_FORMULA_STARTS). A
    text holding bytes that are not UTF-8, or starting with a double quote, is written as a JSON
    string (in quotes, the bytes as \\udcXX escapes). Reading undoes both.
    """
    suffix = ".csv"

    @staticmethod
    def cell(value) -> str:
        if value is None:
            return ""
        if isinstance(value, (list, dict)):
            return to_json(value)
        text = str(value)
        if _has_undecodable_bytes(text) or text.startswith('"'):
            text = to_json(text)
        return "'" + text if text.startswith(_FORMULA_STARTS) else text

    @staticmethod
    def read_cell(text: str) -> str:
        """What Csv.cell wrote `text` from (lists stay as their JSON text)."""
        text = text.removeprefix("'")
        return json.loads(text) if text.startswith('"') else text

    @staticmethod
    def parse(text: str, fields: list[str], path: Path) -> list[dict]:
        rows = list(csv.reader(io.StringIO(text, newline="")))
        if not rows:
            return []
        if rows[0] != fields:
            raise RecordFileError(f"{path}: its columns are {', '.join(rows[0])}, not {', '.join(fields)}: it was "
                                  "written with other options (or is another file); use another --out")
        try:
            return [dict(zip(fields, map(Csv.read_cell, row))) for row in rows[1:]]
        except json.JSONDecodeError as error:
            raise RecordFileError(f"{path}: a quoted cell is not a JSON string ({error.msg}); is it another "
                                  "file?") from None

    @staticmethod
    def header(fields: list[str]) -> str:
        return Csv.format([dict(zip(fields, fields))], fields)

    @staticmethod
    def format(records: list[dict], fields: list[str]) -> str:
        out = io.StringIO(newline="")
        writer = csv.writer(out)
        for record in records:
            writer.writerow(Csv.cell(record[f]) for f in fields)
        return out.getvalue()


FORMATS = {f.suffix: f for f in (JsonLines, Csv)}


def format_of(path: Path):
    """The format an output file's name asks for; refused for a name of no format, or a folder."""
    if Path(path).is_dir():
        raise RecordFileError(f"{path} is a folder: name the output file, e.g. {Path(path) / 'captions.jsonl'}")
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
