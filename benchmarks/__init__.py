"""Benchmarks of the tagger, each run from the project root as `python -m benchmarks.<name>`.

accuracy (CoNLL-2003 F1 over seeds), ensemble (averaged stored models), speed (training and tagging vs Flair and a
bare nn.LSTM), train (training step vs a bare nn.LSTM), scaling (time vs corpus size and sentence length), tag (bulk
tagging: tokens/s, memory, stages; `--compare REV` against an older commit), precision (fp32 vs bf16), spark
(engine=spark vs engine=local; `--compare REV` too). What they share is in `benchmarks.harness`; their tables go to
docs/benchmarks.md (spark: docs/scale-out.md).
"""
