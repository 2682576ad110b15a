"""evaluate(): a model over a split of a feature store or a corpus, scored end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import store_baselines, tone_utterance, write_utterance
from typer.testing import CliRunner

from phonelabel.cli import app
from phonelabel.errors import PhonelabelError
from phonelabel.evaluate import evaluate
from phonelabel.features import NO_LABEL, FeatureConfig
from phonelabel.metrics import reference_string
from phonelabel.model import ModelConfig, PhoneLSTM
from phonelabel.modeldir import TrainedModel, save_model
from phonelabel.phones import FOLD_INDEX, PHONE_INDEX
from phonelabel.store import featurize, open_store

SCHEMA = {
    "split", "frames", "frame_accuracy_61", "frame_accuracy_39", "phone_error_rate_39",
    "per_phone", "confusion_39", "utterances", "speakers", "scoring", "seed", "model", "source",
    "substitutions", "deletions", "insertions", "boundary_precision", "boundary_recall",
    "per_decoder", "phone_error_rate_39_argmax", "most_confused",
}  # fmt: skip


@pytest.fixture
def store(tone_store) -> Path:
    return tone_store


@pytest.fixture
def global_store(tone_global_store) -> Path:
    return tone_global_store


def random_model(directory: Path, store_path: Path, seed: int = 0, **changes) -> Path:
    """A small untrained model with the store's feature config and statistics."""
    store = open_store(store_path)
    torch.manual_seed(seed)
    model = PhoneLSTM(ModelConfig(input_dim=store.config.dim, hidden=16, layers=1, delay=2))
    trained = TrainedModel(model.eval(), store.config, store.stats, training={"seed": seed})
    save_model(directory, replace(trained, **changes))
    return directory


def constant_model(directory: Path, store_path: Path, phone: str) -> Path:
    """A model whose every frame is ``phone``: all weights zero, one output bias high."""
    store = open_store(store_path)
    model = PhoneLSTM(ModelConfig(input_dim=store.config.dim, hidden=8, layers=1, delay=1))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.output.bias[PHONE_INDEX[phone]] = 10.0
    save_model(directory, TrainedModel(model.eval(), store.config, store.stats))
    return directory


def test_constant_model_scores_equal_hand_counts(store, tmp_path):
    result = evaluate(constant_model(tmp_path / "m", store, "h#"), store, "test").to_json()
    split = open_store(store).split("test")
    labels = np.asarray(split.labels).astype(np.int64)
    labelled = labels[labels != NO_LABEL]
    folded = FOLD_INDEX[labelled]
    assert result["frames"] == len(labelled)
    assert result["frame_accuracy_61"] == pytest.approx(np.mean(labelled == PHONE_INDEX["h#"]))
    sil = FOLD_INDEX[PHONE_INDEX["h#"]]
    assert result["frame_accuracy_39"] == pytest.approx(np.mean(folded[folded >= 0] == sil))
    # Every utterance's phone string starts and ends with sil (h#): the hypothesis "sil"
    # matches one of them and every other reference phone is a deletion.
    strings = [reference_string(u.phones) for u in split.utterances]
    assert all(s[0] == sil and s[-1] == sil for s in strings)
    assert (result["substitutions"], result["insertions"]) == (0, 0)
    assert result["deletions"] == sum(len(s) - 1 for s in strings)
    assert result["boundary_recall"] == 0.0 and result["boundary_precision"] is None
    assert result["per_phone"]["h#"]["accuracy"] == 1.0
    assert result["per_phone"]["s"]["accuracy"] == 0.0


@pytest.mark.slow
def test_trained_model_scores_as_training_measured_it(tone_model, tone_store, tone_corpus):
    history = [json.loads(line) for line in (tone_model / "metrics.jsonl").read_text().splitlines()]
    best = max(history, key=lambda record: record["dev_frame_accuracy_61"])
    from_store = evaluate(tone_model, tone_store, "dev")
    assert from_store.frame_accuracy_61 == pytest.approx(best["dev_frame_accuracy_61"])
    assert from_store.frame_accuracy_39 == pytest.approx(best["dev_frame_accuracy_39"])
    from_corpus = evaluate(tone_model, tone_corpus, "dev")
    assert np.array_equal(from_store.confusion, from_corpus.confusion)
    report = evaluate(tone_model, tone_store, "test").to_json()
    assert report["seed"] == 0
    constant, per_frame = store_baselines(tone_store, "test", fold=True)
    accuracy = report["frame_accuracy_39"]
    assert accuracy > constant + 0.4, (
        f"test {accuracy:.3f}: not 0.4 above always-sil {constant:.3f}"
    )
    assert accuracy > per_frame - 0.02, (
        f"test {accuracy:.3f} vs per-frame predictor {per_frame:.3f}"
    )
    # evaluate decodes with the smoothing train tuned on dev, and scores dev as train did
    decoder = json.loads((tone_model / "config.json").read_text())["decoder_tuning"]
    dev = from_store.to_json()
    assert dev["phone_error_rate_39"] == pytest.approx(decoder["dev_phone_error_rate_39"])
    assert dev["phone_error_rate_39_argmax"] == pytest.approx(
        decoder["dev_phone_error_rate_39_argmax"]
    )
    assert dev["phone_error_rate_39"] <= dev["phone_error_rate_39_argmax"]


def test_store_and_corpus_evaluation_agree(store, tone_corpus, tmp_path):
    model = random_model(tmp_path / "m", store)
    from_store = evaluate(model, store, "test").to_json()
    from_corpus = evaluate(model, tone_corpus, "test").to_json()
    assert (from_store["source_kind"], from_corpus["source_kind"]) == ("store", "corpus")
    for key in ("source", "source_kind", "seconds"):
        del from_store[key], from_corpus[key]
    assert from_store == from_corpus
    assert 0 < from_store["frame_accuracy_61"] < 1  # the untrained model is partly right


def test_global_normalisation_store_and_corpus_agree(global_store, tone_corpus, tmp_path):
    model = random_model(tmp_path / "m", global_store, seed=1)
    from_store = evaluate(model, global_store, "dev")
    from_corpus = evaluate(model, tone_corpus, "dev")
    assert np.array_equal(from_store.confusion, from_corpus.confusion)


def test_store_is_normalised_with_the_models_own_statistics(global_store, tone_corpus, tmp_path):
    """The store keeps raw features: a model trained elsewhere is scored on them normalised
    by its own statistics, exactly as on the corpus featurised for it."""
    stats = open_store(global_store).stats
    other = {"mean": [m + 0.5 for m in stats["mean"]], "std": [2 * s for s in stats["std"]]}
    model = random_model(tmp_path / "m", global_store, seed=2, stats=other)
    from_store = evaluate(model, global_store, "test")
    from_corpus = evaluate(model, tone_corpus, "test")  # featurised with the model's stats
    assert np.array_equal(from_store.confusion, from_corpus.confusion)
    assert from_store.edits == from_corpus.edits


def test_json_report_has_every_field(store, tmp_path):
    report = evaluate(random_model(tmp_path / "m", store, seed=7), store, "dev").to_json()
    assert SCHEMA <= set(report)
    json.dumps(report)  # plain JSON types only
    assert report["split"] == "dev" and report["seed"] == 7
    assert np.array(report["confusion_39"]).shape == (39, 39)
    assert (
        np.array(report["confusion_39"]).sum() + sum(report["q_predicted_39"])
        == (report["frames_39"])
    )
    assert set(report["per_phone"]["aa"]) >= {"frames", "accuracy"}
    assert sum(v["frames"] for v in report["per_phone"].values()) == report["frames"]
    assert "q deleted" in report["scoring"] and "sil" in report["scoring"]
    assert report["utterances"] == 12 and report["speakers"] == 2


def test_no_smooth_uses_argmax_for_the_per(store, tmp_path):
    model = random_model(tmp_path / "m", store, seed=3)
    smoothed = evaluate(model, store, "test", smooth=True).to_json()
    plain = evaluate(model, store, "test", smooth=False).to_json()
    assert (smoothed["per_decoder"], plain["per_decoder"]) == ("viterbi", "argmax")
    assert plain["phone_error_rate_39"] == plain["phone_error_rate_39_argmax"]
    assert smoothed["phone_error_rate_39_argmax"] == plain["phone_error_rate_39"]
    assert smoothed["phone_error_rate_39"] < smoothed["phone_error_rate_39_argmax"]
    assert smoothed["frame_accuracy_61"] == plain["frame_accuracy_61"]  # arg-max either way


def test_batch_size_does_not_change_the_scores(store, tmp_path):
    model = random_model(tmp_path / "m", store, seed=4)
    one = evaluate(model, store, "test", batch_utterances=1)
    many = evaluate(model, store, "test", batch_utterances=64)
    assert np.array_equal(one.confusion, many.confusion)
    assert one.edits == many.edits


def test_feature_config_mismatch_names_the_fields(store, tmp_path):
    model = random_model(tmp_path / "m", store, feature=FeatureConfig(preemphasis=0.9))
    with pytest.raises(PhonelabelError, match=r"preemphasis: 0.9 \(model\) vs 0.97 \(store\)"):
        evaluate(model, store, "test")


def test_a_model_whose_inputs_do_not_fit_its_features_is_refused(store, tmp_path):
    model = random_model(tmp_path / "m", store, feature=FeatureConfig(kind="fbank"))
    with pytest.raises(PhonelabelError, match="takes 39 inputs, the features have 120"):
        evaluate(model, store, "test")


def test_unknown_split_is_refused(store, tone_corpus, tmp_path):
    model = random_model(tmp_path / "m", store)
    with pytest.raises(PhonelabelError, match="no split 'nope'.*train, dev, test"):
        evaluate(model, store, "nope")
    with pytest.raises(PhonelabelError, match="no split 'nope'"):
        evaluate(model, tone_corpus, "nope")


def test_empty_split_is_refused(store, tmp_path):
    rng = np.random.default_rng(1)
    corpus = tmp_path / "corpus"
    for name in ("SX1", "SX2"):  # a TRAIN part only: dev and test are empty
        write_utterance(corpus / "TRAIN" / "DR1" / "MABC9", name, *tone_utterance(rng))
    featurize(corpus, tmp_path / "store", jobs=1)
    model = random_model(tmp_path / "m", store)
    for source in (corpus, tmp_path / "store"):
        with pytest.raises(PhonelabelError, match="split 'test' is empty"):
            evaluate(model, source, "test")


def test_source_that_is_neither_store_nor_corpus(store, tmp_path):
    model = random_model(tmp_path / "m", store)
    (tmp_path / "junk").mkdir()
    with pytest.raises(PhonelabelError, match="junk"):
        evaluate(model, tmp_path / "junk", "test")
    with pytest.raises(PhonelabelError, match="no such"):
        evaluate(model, tmp_path / "missing", "test")


@pytest.mark.slow
def test_cli_prints_table_and_writes_json_and_plots(store, tmp_path):
    model = random_model(tmp_path / "m", store)
    report, plots = tmp_path / "out" / "r.json", tmp_path / "plots"
    result = CliRunner().invoke(
        app,
        ["evaluate", str(model), str(store), "--split", "test", "--json", str(report),
         "--plots", str(plots), "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "frame accuracy, 39 classes" in result.output and "PER" in result.output
    data = json.loads(report.read_text())
    assert data["split"] == "test" and SCHEMA <= set(data)
    for name in ("confusion.png", "per_phone.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_user_error_exits_2(store, tmp_path):
    model = random_model(tmp_path / "m", store)
    result = CliRunner().invoke(app, ["evaluate", str(model), str(store), "--split", "nope"])
    assert result.exit_code == 2
    assert "no split 'nope'" in result.output


def test_tone_corpus_fixture_is_what_these_tests_assume(tone_corpus):
    # guards the tests above: q and h# occur, so q handling and the sil ends are exercised
    phn = "".join(p.read_text() for p in tone_corpus.rglob("*.PHN"))
    assert " q\n" in phn and " h#\n" in phn


@pytest.mark.parametrize("option", ["--json", "--plots"])
def test_unwritable_outputs_are_refused_before_scoring(store, tmp_path, option):
    model = random_model(tmp_path / "m", store)
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file").write_text("x")
    target = tmp_path / ("a_dir" if option == "--json" else "a_file")
    result = CliRunner().invoke(app, ["evaluate", str(model), str(store), option, str(target)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "frame accuracy" not in result.output
    assert str(target) in result.output
