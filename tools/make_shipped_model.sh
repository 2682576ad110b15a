#!/usr/bin/env bash
# Build the shipped model (models/default) that has heard real people: 0.3.0's synthetic
# model adapted with `phonelabel adapt` on ../shared/realspeech/transcribed (real recordings,
# words only), synthetic frames mixed in against forgetting. Then measure it against the
# starting model on real speech (mfa/, never trained on) and on synthetic unseen voices.
#
# usage: tools/make_shipped_model.sh [WORK_DIR]   (run from the repository root; about 5 minutes on 2 CPU cores;
#        START=DIR starts from another model than 0.3.0's; add --device cuda to adapt for a GPU)
set -euo pipefail
WORK=${1:-build-shipped}
REAL=${REAL:-../shared/realspeech}
if [ -e "$WORK" ]; then echo "$WORK exists: give a new WORK_DIR" >&2; exit 2; fi
mkdir -p "$WORK/start"
if [ -n "${START:-}" ]; then
    cp -r "$START"/. "$WORK/start"
else  # the 0.3.0 model (synthetic voices only), from this repository's history (0.3.0's tree)
    git archive b426805 models/default | tar -x -C "$WORK/start" --strip-components=2
fi

# 1. a synthetic store to mix in (its train split) and to measure unseen voices on (its test split)
phonelabel synth "$WORK/syn" --speakers 60 --utterances-per-speaker 10 --seed 11 --jobs 2
phonelabel featurize "$WORK/syn" "$WORK/syn_feat" --jobs 2
# unseen voices without the lead-in/out silence (as 0.3.0's corpus had them): a fairer test
phonelabel synth "$WORK/nosil" --speakers 30 --utterances-per-speaker 6 --seed 5 --jobs 2 \
    --conditions vtlp,tone,room,noise,babble,channel,phone,gain
phonelabel featurize "$WORK/nosil" "$WORK/nosil_feat" --jobs 2

# 2. adapt (defaults: 1 round, 8 epochs, mismatch threshold median - 3 MAD)
phonelabel adapt "$REAL/transcribed" --out "$WORK/adapted" --model "$WORK/start" \
    --mix "$WORK/syn_feat" --seed 0   # --mix-share 0.5, the default

# 3. measure: real speech (frames and boundaries) and synthetic unseen voices, before and after
for m in start adapted; do
    phonelabel evaluate "$WORK/$m" "$REAL/mfa" --split all --json "$WORK/$m-mfa.json"
    phonelabel evaluate "$WORK/$m" "$REAL/mfa" --split all --align --json "$WORK/$m-mfa-align.json"
    phonelabel evaluate "$WORK/$m" "$WORK/syn_feat" --split test --json "$WORK/$m-syn-test.json"
    phonelabel evaluate "$WORK/$m" "$WORK/nosil_feat" --split test --json "$WORK/$m-nosil-test.json"
done

# 4. ship it (model.pt, config.json, metrics.jsonl, curves.png; adapt.json/png as its report)
for f in model.pt config.json metrics.jsonl curves.png adapt.json adapt.png; do
    cp "$WORK/adapted/$f" models/default/
done
echo "new shipped model in models/default; figures in $WORK/*.json"
phonelabel evaluate models/default "$WORK/syn_feat" --split test --plots "$WORK/plots" >/dev/null
cp "$WORK"/plots/confusion*.png models/default/confusion_test.png
