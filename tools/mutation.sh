#!/usr/bin/env bash
# Mutation testing (mutmut) of the pure-Python core: beam search, vocabulary, data loading,
# metrics and BERTScore, the feature cache. Configured in pyproject.toml ([tool.mutmut]): which
# modules are mutated and which fast tests judge them. Not part of CI; run from the venv with
# requirements-dev.txt installed (it pins mutmut). Results are cached in mutants/: a second run
# retests only what changed. `mutmut show NAME` prints a mutant's diff, `mutmut browse` browses them.
#   tools/mutation.sh                          # everything, one worker (MUTMUT_CHILDREN=N for more)
#   tools/mutation.sh "pipeline.vocab.*"       # one module's mutants (names as mutmut prints them)
set -euo pipefail
cd "$(dirname "$0")/.."
nice -n 10 mutmut run --max-children "${MUTMUT_CHILDREN:-1}" "$@"
python tools/mutation_score.py
