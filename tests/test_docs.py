"""The README stays short and every relative link in it and in docs/*.md leads somewhere real."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKDOWN_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`+[^`]*`+")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text):
    """The lines outside fenced code blocks, with (line number, line)."""
    in_code = False
    for number, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            yield number, line


def code_blocks(text, language):
    """The bodies of the fenced code blocks opened with ```language."""
    blocks, current = [], None
    for line in text.split("\n"):
        if current is None:
            if line.strip() == "```" + language:
                current = []
        elif line.strip().startswith("```"):
            blocks.append(current)
            current = None
        else:
            current.append(line)
    return blocks


def slug(heading):
    """GitHub's anchor for a heading: lowercase, punctuation but '-' and '_' removed, spaces to '-'."""
    text = INLINE_CODE.sub(lambda m: m.group(0).strip("`"), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)   # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return "".join(c for c in text if c.isalnum() or c in "-_ ").replace(" ", "-")


def anchors(path):
    """Every anchor GitHub gives the headings of a Markdown file (repeats get -1, -2, ...)."""
    seen, result = {}, set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def relative_links(path):
    """(line number, target) for each relative link and image of a Markdown file, outside code."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            target = match.group(1)
            if re.match(r"^(https?:|mailto:)", target, re.IGNORECASE):
                continue
            yield number, target


def broken_links(files, root=ROOT):
    problems = []
    for path in files:
        for number, target in relative_links(path):
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(root)}:{number}: {target}"
            if not linked.exists():
                problems.append(f"{where} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"{where} (no heading with anchor #{anchor})")
    return problems


def test_the_readme_is_short():
    lines = README.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    assert len(lines) < 250, f"README.md has {len(lines)} lines; move detail into docs/"


def test_every_relative_link_points_to_an_existing_file_and_heading():
    assert MARKDOWN_FILES[1:], "no docs/*.md found"
    problems = broken_links(MARKDOWN_FILES)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_readme_keeps_the_test_command_ci_runs():
    blocks = code_blocks(README.read_text(encoding="utf-8"), "bash")
    commands = [line.split("#")[0].strip() for block in blocks for line in block]
    assert "python -m pytest -q" in commands


@pytest.mark.parametrize("heading, anchor", [
    ("Set up", "set-up"),
    ("The second stage: self-critical training, and ensembles",
     "the-second-stage-self-critical-training-and-ensembles"),
    ("How `weights/` was made", "how-weights-was-made"),
    ("The app, the Python API, embedding and the HTTP/JS API",
     "the-app-the-python-api-embedding-and-the-httpjs-api"),
    ("snake_case and-dash", "snake_case-and-dash"),
])
def test_anchors_are_slugged_as_github_does(heading, anchor):
    assert slug(heading) == anchor


def test_a_broken_link_is_reported(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [gone](missing.md) [bad](#nowhere) ![img](x.png)\n"
                    "```bash\n[not a link](nowhere.md)\n```\n[web](https://example.org/x#y)\n",
                    encoding="utf-8")
    problems = broken_links([page], root=tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "missing.md (no such file)", "#nowhere (no heading with anchor #nowhere)", "x.png (no such file)"]
