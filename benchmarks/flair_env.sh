#!/usr/bin/env bash
# Create .venv-flair/ (repo root): Flair, the peer that `python -m benchmarks.speed` compares our tagger against.
#
#     bash benchmarks/flair_env.sh            # create (or update) .venv-flair/
#     bash benchmarks/flair_env.sh --force    # delete it and start over
#
# Why a separate environment: Flair pulls transformers, gensim, huggingface-hub and friends, none of which the
# project needs; keeping them out of .venv keeps our own dependency set (and CI) small. The benchmark runs
# benchmarks/flair_peer.py with .venv-flair/bin/python as a child process.
#
# Why -c constraints.txt: it pins torch==2.13.0 (the local CPU wheel), the same torch as ours, so the comparison
# measures the two libraries and not two torch builds; unpinned, pip would fetch a CUDA torch of several GB.
#
# The word-embeddings extra brings gensim (Flair 0.15 no longer installs it by default), which WordEmbeddings
# needs to read a KeyedVectors file.
#
# Only the package registry is used here; at run time Flair downloads nothing (flair_peer.py uses only local
# files: the CoNLL-2003 folder and a GloVe file converted to gensim KeyedVectors in a temporary folder).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-flair"
FLAIR_VERSION="${FLAIR_VERSION:-0.15.1}"  # the release measured in docs/benchmarks.md

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet -c "$ROOT/constraints.txt" "flair[word-embeddings]==$FLAIR_VERSION"
# seqeval: benchmarks/flair_accuracy.py scores Flair's predictions with the seqeval call our project scores with
# (Flair 0.15 does not depend on it); 1.2.2 is the release .venv has.
"$VENV/bin/pip" install --quiet -c "$ROOT/constraints.txt" "seqeval==1.2.2"
"$VENV/bin/python" - <<'EOF'
import flair, gensim, seqeval, torch
print(f"flair {flair.__version__}, gensim {gensim.__version__}, torch {torch.__version__} in {__import__('sys').prefix}")
assert torch.__version__.startswith("2.13.0"), "torch is not the pinned 2.13.0: was constraints.txt applied?"
EOF
