#!/usr/bin/env bash
# A CI job with ftune: train → metric gate → predict. Extra arguments are train overrides, e.g.
#   scripts/ci_example.sh task.data.train=train.conll task.data.validation=dev.conll
# Environment: FTUNE (command, default `ftune`), OUT (folder, default ci-out), GATE (default f1>=0.85),
# INPUT (text lines to predict on). Exit codes are ftune's: 0 ok, 1 the gate was missed, 2 bad
# config or data, 130/143 interrupted (a checkpoint was saved). stdout carries JSON only, logs go to stderr.
set -euo pipefail
FTUNE=${FTUNE:-ftune}
OUT=${OUT:-ci-out}
GATE=${GATE:-f1>=0.85}
INPUT=${INPUT:-"Angela Merkel met Emmanuel Macron in Paris ."}
export NO_COLOR=1  # plain log lines, no progress redraws, whatever the CI runner's terminal claims
mkdir -p "$OUT"

# 1. train (trainer.seed makes the run reproducible); results.json is also printed as one JSON document
$FTUNE train run_dir="$OUT/run" overwrite=true trainer.seed=42 output_format=json "$@" > "$OUT/train.json"

# 2. the gate: exit 1 and one line on stderr when a metric misses; the metrics as JSON either way
if ! $FTUNE eval run_dir="$OUT/run" split=validation check="$GATE" output_format=json > "$OUT/eval.json"; then
    echo "ci: the model missed the gate ($GATE); predictions not published" >&2
    exit 1
fi

# 3. predict: JSON lines in, JSON lines out
printf '%s\n' "$INPUT" | $FTUNE predict run_dir="$OUT/run" > "$OUT/predictions.jsonl"
echo "ci: passed $GATE; $(wc -l < "$OUT/predictions.jsonl") prediction(s) in $OUT/predictions.jsonl" >&2
