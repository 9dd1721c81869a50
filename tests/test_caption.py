"""caption.py: batch captioning into JSON Lines or CSV, resumable, with the local and the Ray engine."""
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

import caption
from conftest import ROOT, SHARED_FLICKR8K, n_best_of, needs_shared
from pipeline import Captioner
from pipeline.records import Csv, RecordFile

EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))
BROKEN = {"notes.jpg": "not an image format", "truncated.jpg": "truncated"}


@pytest.fixture
def photos(tmp_path) -> Path:
    """Nested folders with non-ASCII names, two broken files, and files a folder search must skip."""
    root = tmp_path / "photos"
    for relative, example in [("a.jpg", 0), ("sub/b.jpg", 1), ("sub/deeper/c.jpg", 2), ("été/日本の犬.jpg", 3),
                              ("sub/deeper/.hidden.jpg", 4), ("sub/README.txt", 5)]:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLES[example], root / relative)
    (root / "sub" / "notes.jpg").write_bytes(b"%PDF-1.4 these are not pixels\n")
    (root / "truncated.jpg").write_bytes(EXAMPLES[5].read_bytes()[:4000])
    return root


def expected_photos(root: Path) -> set[str]:
    return {str(root / p) for p in ("a.jpg", "sub/b.jpg", "sub/deeper/c.jpg", "été/日本の犬.jpg", "sub/notes.jpg",
                                    "truncated.jpg")}


def read_records(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        return [{**row, "error": row["error"] or None,
                 **({"n_best": json.loads(row["n_best"])} if "n_best" in row else {})} for row in rows]
    return [json.loads(line) for line in text.splitlines()]


def run(model, *args):
    caption.main([*map(str, args), "--model", str(model)])


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_one_record_per_photo_with_errors_recorded(exported_model, photos, tmp_path, suffix):
    out = tmp_path / f"captions{suffix}"
    # b.jpg twice (by the folder and by name) and a.jpg through a link: each photo once
    (tmp_path / "link.jpg").symlink_to(photos / "a.jpg")
    run(exported_model, photos, photos / "sub" / "b.jpg", tmp_path / "link.jpg", "--out", out, "--batch-size", 2)
    records = read_records(out)
    assert Counter(r["path"] for r in records) == Counter(expected_photos(photos))
    by_name = {Path(r["path"]).name: r for r in records}
    for name, words in BROKEN.items():
        assert words in by_name[name]["error"] and not by_name[name]["caption"]
    captioned = [r for r in records if Path(r["path"]).name not in BROKEN]
    # the same captions as the model gives one call at a time
    captioner = Captioner.from_pretrained(exported_model)
    expected = n_best_of(captioner, [r["path"] for r in captioned], 3)
    assert [r["caption"] for r in captioned] == [best[0].text for best in expected]
    assert all(r["error"] is None for r in captioned)


def test_n_best_records_carry_probabilities(exported_model, tmp_path):
    out = tmp_path / "captions.jsonl"
    run(exported_model, *EXAMPLES[:3], "--out", out, "--beam-size", 3, "--n-best", 2)
    for record in read_records(out):
        probabilities = [c["probability"] for c in record["n_best"]]
        assert len(probabilities) == 2 and record["n_best"][0]["caption"] == record["caption"]
        assert all(0 < p <= 1 for p in probabilities) and probabilities == sorted(probabilities, reverse=True)


class Killed(Exception):
    """Stands in for SIGKILL: the run stops in the middle of writing a batch."""


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_killed_run_resumes_and_ends_with_every_photo_once(exported_model, photos, tmp_path, monkeypatch, suffix):
    out = tmp_path / f"captions{suffix}"
    listing = tmp_path / "list.txt"
    listing.write_text("# the photos\n" + "\n".join(os.path.relpath(p, tmp_path) for p in sorted(
        expected_photos(photos))) + "\n\n", encoding="utf-8")
    write = RecordFile.write

    def killed_in_the_second_batch(self, records):
        if self.recorded:
            self._file.write(self.format.format(records, self.fields)[:25])  # half a line, as a kill leaves it
            self._file.flush()
            raise Killed
        write(self, records)

    monkeypatch.setattr(RecordFile, "write", killed_in_the_second_batch)
    with pytest.raises(Killed):
        run(exported_model, f"@{listing}", "--out", out, "--batch-size", 2)
    assert not out.read_text(encoding="utf-8").endswith("\n")  # the first batch, then half a record
    monkeypatch.setattr(RecordFile, "write", write)
    run(exported_model, f"@{listing}", "--out", out, "--batch-size", 2)
    records = read_records(out)
    assert Counter(r["path"] for r in records) == Counter(expected_photos(photos))
    # and a run with nothing left to do changes nothing
    before = out.read_bytes()
    run(exported_model, f"@{listing}", "--out", out)
    assert out.read_bytes() == before


def test_resuming_a_file_with_a_photo_twice_keeps_its_first_record(exported_model, tmp_path):
    out = tmp_path / "captions.jsonl"
    run(exported_model, EXAMPLES[0], "--out", out)
    line = out.read_text(encoding="utf-8")
    # e.g. two outputs joined by hand, then cut off by a kill
    out.write_text(line + line.replace('"caption": "', '"caption": "not this one: ') + line[:30], encoding="utf-8")
    run(exported_model, *EXAMPLES[:2], "--out", out)
    records = read_records(out)
    assert [r["path"] for r in records] == [str(EXAMPLES[0]), str(EXAMPLES[1])]
    assert records[0] == json.loads(line)


def test_resuming_with_other_fields_is_refused(exported_model, tmp_path):
    out = tmp_path / "captions.csv"
    run(exported_model, EXAMPLES[0], "--out", out)
    with pytest.raises(SystemExit, match="written with other options"):
        run(exported_model, EXAMPLES[0], "--out", out, "--n-best", 2)


def test_an_argument_that_names_nothing_stops_the_run_before_it_starts(exported_model, tmp_path):
    out = tmp_path / "captions.jsonl"
    with pytest.raises(SystemExit, match="no such file or folder, and no match: .*missing.jpg"):
        run(exported_model, EXAMPLES[0], tmp_path / "missing.jpg", "--out", out)
    assert not out.exists()
    with pytest.raises(SystemExit, match=r"must end in \.jsonl or \.csv"):
        run(exported_model, EXAMPLES[0], "--out", tmp_path / "captions.txt")


def test_a_folder_as_out_is_refused_clearly(exported_model, tmp_path):
    with pytest.raises(SystemExit, match=r"captions.jsonl is a folder: name the output file"):
        run(exported_model, EXAMPLES[0], "--out", (tmp_path / "captions.jsonl").mkdir() or tmp_path / "captions.jsonl")


def test_a_folder_linked_to_itself_or_above_is_walked_once(tmp_path):
    from pipeline.batch import find_photos

    root = tmp_path / "L"
    (root / "sub").mkdir(parents=True)
    shutil.copy(EXAMPLES[0], root / "sub" / "x.jpg")
    (root / "self").symlink_to(".")
    (root / "sub" / "up").symlink_to("..")
    (tmp_path / "elsewhere").symlink_to(root / "sub")  # the same folder by a second way: its photo once
    found = []
    walk = threading.Thread(target=lambda: found.append(find_photos([str(root), str(tmp_path / "elsewhere")])),
                            daemon=True)
    walk.start()
    walk.join(timeout=30)
    assert not walk.is_alive(), "the walk of a folder that links to itself never ended"
    assert found == [[str(root / "sub" / "x.jpg")]]


# names that break a reader splitting lines at every Unicode line break, or refusing what is not UTF-8,
# and names a spreadsheet would run as formulas
AWKWARD_NAMES = [b"line\xe2\x80\xa8sep.jpg", b"para\xe2\x80\xa9sep.jpg", b"next\xc2\x85line.jpg", b"latin1-\xe9t\xe9.jpg",
                 b"@SUM(A1).jpg", b"-2+3.jpg", b"+cmd.jpg", b"=1+1.jpg", b"'quoted.jpg", b'"double.jpg']


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_any_file_name_survives_the_round_trip_and_the_resume(exported_model, tmp_path, suffix):
    folder = tmp_path / "awkward"
    folder.mkdir()
    paths = [os.fsdecode(os.path.join(os.fsencode(folder), name)) for name in AWKWARD_NAMES]
    for path in paths:
        shutil.copy(EXAMPLES[0], path)
    out = tmp_path / f"captions{suffix}"
    run(exported_model, paths[0], "--out", out)
    run(exported_model, folder, "--out", out)  # resumes after the first photo
    raw = out.read_bytes()
    text = raw.decode("utf-8")  # strict: every byte of the file is UTF-8
    if suffix == ".jsonl":  # Unicode line breaks as JSON escapes (a CSV reader splits at \r and \n alone)
        assert not any(ch in text for ch in "\u2028\u2029\x85")
    records = RecordFile(out, list(caption.caption_record("", None, 0))).done
    assert records == {os.path.realpath(p) for p in paths}  # each photo once, its name as it was
    if suffix == ".csv":
        cells = [row[0] for row in csv.reader(io.StringIO(text, newline=""))][1:]
        for cell in cells:  # no cell a spreadsheet would take for a formula
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
        assert {os.fsencode(Csv.read_cell(cell)) for cell in cells} == {os.fsencode(p) for p in paths}
    else:
        assert {os.fsencode(json.loads(line)["path"]) for line in text.split("\n")[:-1]} == {
            os.fsencode(p) for p in paths}
    run(exported_model, folder, "--out", out)  # nothing left to do: the file is read back and kept as it was
    assert out.read_bytes() == raw


def test_the_ray_engine_writes_the_same_records(exported_model, photos, tmp_path):
    ray = pytest.importorskip("ray")
    from pipeline import ray_engine
    local, distributed = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    run(exported_model, photos, "--out", local, "--n-best", 2, "--batch-size", 4)
    ray_engine.connect(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False)
    try:
        run(exported_model, photos, "--out", distributed, "--n-best", 2, "--batch-size", 4, "--engine", "ray")
    finally:
        ray.shutdown()
    by_path = {r["path"]: r for r in read_records(local)}
    ray_records = read_records(distributed)
    assert len(ray_records) == len(by_path)
    for record in ray_records:
        expected = by_path[record["path"]]
        assert record["caption"] == expected["caption"] and record["error"] == expected["error"]
        assert [c["caption"] for c in record["n_best"]] == [c["caption"] for c in expected["n_best"]]
        assert [c["probability"] for c in record["n_best"]] == pytest.approx(
            [c["probability"] for c in expected["n_best"]], rel=1e-5)


@needs_shared
@pytest.mark.slow
def test_caption_py_on_a_two_node_ray_cluster_with_default_options(ray_cluster, exported_model, tmp_path):
    """caption.py --engine ray as the README says: a cluster of two 1-CPU nodes started by `ray start`
    (token authentication on), joined through RAY_ADDRESS, default --actors: 150 Flickr8k photos give
    the local engine's records. (With actors that took a whole CPU, this hung at 0/150.)"""
    listing = tmp_path / "photos.txt"
    test_names = (SHARED_FLICKR8K / "Flickr8k_text" / "Flickr_8k.testImages.txt").read_text().split()[:150]
    listing.write_text("".join(f"{SHARED_FLICKR8K / 'Flicker8k_Dataset' / name}\n" for name in test_names))
    local, distributed = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    run(exported_model, f"@{listing}", "--out", local)
    done = subprocess.run([sys.executable, "caption.py", f"@{listing}", "--out", str(distributed), "--engine", "ray",
                           "--model", str(exported_model)], cwd=ROOT, env=ray_cluster, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    by_path = {r["path"]: r for r in read_records(local)}
    assert len(by_path) == 150 and sorted(r["path"] for r in read_records(distributed)) == sorted(by_path)
    for record in read_records(distributed):
        assert record == by_path[record["path"]]


def test_a_pool_the_cluster_cannot_hold_is_refused_at_once_saying_what_to_change(monkeypatch):
    from pipeline import ray_engine

    monkeypatch.setattr(ray_engine, "alive_nodes", lambda: [{"Resources": {"CPU": 1.0}}, {"Resources": {"CPU": 1.0}}])
    ray_engine.check_fits(2)  # one actor and its decoding on each 1-CPU node
    with pytest.raises(ray_engine.ClusterError, match=r"--actors 3 cannot run .* 2 node\(s\) have 1, 1 CPU\(s\), "
                                                      r"room for 2 actor\(s\).*use --actors 2"):
        ray_engine.check_fits(3)


def test_a_run_with_no_batch_back_says_what_the_cluster_lacks(monkeypatch, caplog):
    import time

    ray = pytest.importorskip("ray")
    from pipeline import ray_engine

    monkeypatch.setattr(ray, "available_resources", lambda: {"CPU": 0.0})
    with ray_engine.StallWarning(seconds=0.1):
        time.sleep(0.5)
    assert "no batch has come back for" in caplog.text and "{'CPU': 0.0}" in caplog.text


def test_a_file_written_before_names_were_escaped_still_resumes(tmp_path):
    """Earlier outputs hold U+2028 raw inside a name: lines are split at "\\n" only, so it reads back."""
    out = tmp_path / "captions.jsonl"
    fields = list(caption.caption_record("", None, 0))
    name = str(tmp_path / "line\u2028sep.jpg")
    out.write_text(json.dumps(caption.caption_record(name, "not an image", 0), ensure_ascii=False) + "\n",
                   encoding="utf-8")
    assert RecordFile(out, fields).done == {os.path.realpath(name)}
