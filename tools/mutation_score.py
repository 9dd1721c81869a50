"""Per-module mutation score from mutmut's results in mutants/ (run tools/mutation.sh first).

Prints a Markdown table (killed / total per module; a timeout counts as killed, as mutmut counts
it) and the names of the mutants that were not killed; `mutmut show NAME` prints one's diff.
"""
import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = {"killed", "timeout", "caught by type check"}


def main(root: Path = Path("mutants")) -> int:
    metas = sorted(root.glob("**/*.py.meta"))
    if not metas:
        print("no mutmut results under mutants/: run tools/mutation.sh first", file=sys.stderr)
        return 1
    print("| module | killed / total | score | not killed |\n| --- | --- | --- | --- |")
    not_killed = []
    for meta in metas:
        statuses = {name: status_by_exit_code[code]
                    for name, code in json.loads(meta.read_text())["exit_code_by_key"].items()}
        counts = Counter(statuses.values())
        killed = sum(counts[s] for s in KILLED)
        others = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in KILLED)
        module = meta.relative_to(root).as_posix().removesuffix(".meta")
        print(f"| `{module}` | {killed} / {len(statuses)} | {100 * killed / max(len(statuses), 1):.1f}% | "
              f"{others or '-'} |")
        not_killed += [f"{status:12} {name}" for name, status in sorted(statuses.items()) if status not in KILLED]
    if not_killed:
        print("\nnot killed:\n" + "\n".join(not_killed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
