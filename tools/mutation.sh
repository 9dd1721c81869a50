#!/usr/bin/env bash
# Mutation testing (mutmut) of the pure-Python core: beam search, vocabulary, data loading,
# metrics and BERTScore, the feature cache. Configured in pyproject.toml ([tool.mutmut]): which
# modules are mutated and which fast tests judge them. Not part of CI: run it in a venv made from
# requirements-mutation.txt (requirements-dev.txt and mutmut). Results are cached in mutants/: a
# second run tests only new or changed code's mutants; rm -r mutants/ starts over.
# `mutmut show NAME` prints a mutant's diff, `mutmut browse` browses them.
#   tools/mutation.sh                       # everything, one worker (MUTMUT_CHILDREN=N for more)
#   tools/mutation.sh "pipeline.vocab.*"    # (re)test these mutants only (names as mutmut prints them)
set -euo pipefail
cd "$(dirname "$0")/.."
nice -n 10 mutmut run --max-children "${MUTMUT_CHILDREN:-1}" "$@"
python tools/mutation_score.py
