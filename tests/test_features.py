from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
from conftest import tone_utterance

from phonelabel.core import Segment
from phonelabel.errors import PhonelabelError
from phonelabel.features import (
    MIN_SIGNAL_FRAMES,
    NO_LABEL,
    FeatureConfig,
    Moments,
    RunningNormalizer,
    carries_signal,
    compute_features,
    compute_features_reference,
    frame_count,
    frame_labels,
    global_stats,
    mel_filterbank,
    normalization_stats,
    normalize,
    normalize_speaker,
)
from phonelabel.phones import PHONE_INDEX

RATE = 16000
MFCC = FeatureConfig()
FBANK = FeatureConfig(kind="fbank")


def _signals() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    tone, _ = tone_utterance(rng)
    t = np.arange(12345) / RATE
    chirp = (0.5 * np.sin(2 * np.pi * (100 + 3000 * t) * t)).astype(np.float32)
    silence_then_noise = np.concatenate([np.zeros(2000), 0.1 * rng.standard_normal(3000)])
    return [tone, chirp, silence_then_noise.astype(np.float32), tone[:400], tone[:559]]


@pytest.mark.parametrize("num_samples", [0, 399, 400, 401, 559, 560, 561, 16000, 16123])
def test_frame_count_is_librosa_framing_without_centre(num_samples):
    expected = 0 if num_samples < 400 else 1 + (num_samples - 400) // 160
    assert frame_count(num_samples) == expected
    if num_samples >= 400:  # librosa.util.frame's framing, in numpy (no numba compile)
        windows = np.lib.stride_tricks.sliding_window_view(np.zeros(num_samples), 400)[::160]
        assert len(windows) == expected
    features = compute_features(np.zeros(num_samples, dtype=np.float32), MFCC)
    assert features.shape == (expected, 39) and features.dtype == np.float32


@pytest.mark.slow  # librosa's numba compilation: ~11 s in a fresh environment
@pytest.mark.parametrize("config", [MFCC, FBANK], ids=["mfcc", "fbank"])
def test_fast_features_match_librosa_reference(config):
    for samples in _signals():
        fast = compute_features(samples, config)
        reference = compute_features_reference(samples, config)
        assert fast.shape == reference.shape == (frame_count(len(samples)), config.dim)
        np.testing.assert_allclose(fast, reference, atol=1e-4, rtol=0)


def test_mel_filterbank_is_librosas():
    ours = mel_filterbank(MFCC)
    theirs = librosa.filters.mel(sr=RATE, n_fft=512, n_mels=40, fmin=20.0, fmax=7600.0)
    np.testing.assert_allclose(ours, theirs, atol=1e-7)


def test_feature_dims_and_layout():
    samples = _signals()[0]
    mfcc = compute_features(samples, MFCC)
    fbank = compute_features(samples, FBANK)
    assert mfcc.shape[1] == 39 and fbank.shape[1] == 120
    # the first static is c0, the orthonormal DCT-II row 0 of the log mel energies
    log_mel = fbank[:, :40]
    c0 = np.sqrt(1 / 40) * log_mel.sum(axis=1)
    np.testing.assert_allclose(mfcc[:, 0], c0, atol=1e-3)


def test_deltas_follow_the_statics_in_time():
    # a steady chord in noise, then silence: inside the chord the deltas (columns 13-25) stay
    # small; where it stops, c0 falls and its delta is strongly negative
    rng = np.random.default_rng(0)
    t = np.arange(16000) / RATE
    chord = 0.3 * sum(np.sin(2 * np.pi * f * t) for f in (440, 1250, 2600, 5100))
    chord = chord + 0.05 * rng.standard_normal(16000)
    samples = np.concatenate([chord, np.zeros(8000)]).astype(np.float32)
    mfcc = compute_features(samples, MFCC)
    statics, deltas = mfcc[:, :13], mfcc[:, 13:26]
    assert np.abs(deltas[10:80]).max() < 1.0  # frames well inside the chord
    stop = 1 + (16000 - 400) // 160  # the first frame past the chord
    assert deltas[stop - 2 : stop + 3, 0].min() < -10.0
    # each delta is the regression slope over +-2 frames of its static (edges repeated)
    padded = np.pad(statics, ((2, 2), (0, 0)), mode="edge")
    slope = sum(k * padded[2 + k : 2 + k + len(statics)] for k in (-2, -1, 1, 2)) / 10
    np.testing.assert_allclose(deltas, slope, atol=1e-3)


def test_frame_labels_use_the_centre_sample_and_leave_gaps_unlabelled():
    # 1000 samples -> 4 frames (not a whole number of hops), centres 200, 360, 520, 680
    segments = [
        Segment(0 / RATE, 300 / RATE, "h#"),
        Segment(360 / RATE, 520 / RATE, "s"),  # starts exactly at centre 1, ends at centre 2
        Segment(520 / RATE, 600 / RATE, "aa"),
        # gap 600..700 holds centre 680
        Segment(700 / RATE, 1000 / RATE, "iy"),
    ]
    num_frames = frame_count(1000)
    labels = frame_labels(segments, num_frames, MFCC)
    assert num_frames == 4 and labels.dtype == np.uint8
    expected = [PHONE_INDEX["h#"], PHONE_INDEX["s"], PHONE_INDEX["aa"], NO_LABEL]
    assert labels.tolist() == expected


def test_frame_labels_of_frames_past_the_last_segment_are_unlabelled():
    labels = frame_labels([Segment(0.0, 0.02, "pau")], 5, MFCC)  # segment ends at 320
    assert labels.tolist() == [PHONE_INDEX["pau"]] + [NO_LABEL] * 4


def test_frame_labels_round_seconds_to_samples():
    # 0.0125 s * 16000 = 200.00000000000003 in floats: still sample 200, so centre 200 is in
    labels = frame_labels([Segment(0.0125, 0.05, "m")], 2, MFCC)
    assert labels.tolist() == [PHONE_INDEX["m"], PHONE_INDEX["m"]]


def test_frame_labels_refuse_an_unknown_phone():
    with pytest.raises(PhonelabelError, match="xx"):
        frame_labels([Segment(0.0, 0.1, "xx")], 3, MFCC)


def test_global_stats_normalize_to_zero_mean_unit_variance():
    rng = np.random.default_rng(0)
    features = (rng.standard_normal((5000, 39)) * 3 + 7).astype(np.float32)
    features[:, 5] = 2.0  # a constant dimension must not divide by zero
    stats = global_stats(features)
    assert stats["frames"] == 5000 and len(stats["mean"]) == len(stats["std"]) == 39
    assert json.loads(json.dumps(stats)) == stats
    normalised = normalize(features, stats["mean"], stats["std"])
    assert normalised.dtype == np.float32 and np.all(np.isfinite(normalised))
    np.testing.assert_allclose(normalised.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.delete(normalised.std(axis=0), 5), 1, atol=1e-3)


def test_global_stats_refuse_no_frames():
    with pytest.raises(PhonelabelError):
        global_stats(np.zeros((0, 39), dtype=np.float32))


def speaker_stats(features: np.ndarray, prior: dict) -> tuple[np.ndarray, np.ndarray]:
    """The speaker rule on frames that all count as signal."""
    moments = Moments().add(features)
    moments.signal = moments.count
    return normalization_stats(MFCC, prior, moments)


def test_speaker_stats_blend_with_the_global_prior():
    rng = np.random.default_rng(0)
    prior = {"mean": [0.0, 0.0], "std": [1.0, 1.0], "frames": 10**6}
    speaker = (rng.standard_normal((10000, 2)) * 2 + 5).astype(np.float32)
    mean, std = speaker_stats(speaker, prior)  # many frames: its own statistics dominate
    np.testing.assert_allclose(mean, 5 * 10000 / 10010, atol=0.05)
    assert np.all(std > 1.9)
    mean, std = speaker_stats(speaker[:0], prior)  # no frames: the prior
    np.testing.assert_allclose(mean, 0.0)
    np.testing.assert_allclose(std, 1.0)
    # 90 frames swinging 4 <-> 6 (a short sound): the mean mostly its own, the std sane
    swinging = 5.0 + np.resize([1.0, -1.0], (90, 1)) * np.ones((1, 2))
    mean, std = speaker_stats(swinging.astype(np.float32), prior)
    np.testing.assert_allclose(mean, 4.5)
    np.testing.assert_allclose(std, np.sqrt((90 * 1.0 + 90 * 0.5**2 + 100) / 190))
    # 90 frames of a constant (a steady hum): no energy swing, so the prior alone
    mean, std = speaker_stats(np.full((90, 2), 5.0, dtype=np.float32), prior)
    np.testing.assert_allclose(mean, 0.0)
    np.testing.assert_allclose(std, 1.0)


def test_a_speaker_without_enough_signal_is_normalised_by_the_prior_alone():
    prior = {"mean": [0.0, 0.0], "std": [1.0, 1.0], "frames": 10**6}
    few = np.full((MIN_SIGNAL_FRAMES - 1, 2), 5.0, dtype=np.float32)
    mean, std = speaker_stats(few, prior)
    np.testing.assert_allclose(mean, 0.0)
    np.testing.assert_allclose(std, 1.0)


def test_silence_carries_no_signal_and_speech_does():
    rng = np.random.default_rng(0)
    quiet = rng.standard_normal(RATE) * 10 ** (-75 / 20)  # -75 dBFS noise
    loud = rng.standard_normal(RATE) * 10 ** (-30 / 20)
    for config in (MFCC, FBANK):
        assert not carries_signal(compute_features(np.zeros(RATE), config), config).any()
        assert not carries_signal(compute_features(quiet, config), config).any()
        assert carries_signal(compute_features(loud, config), config).all()
        assert (
            carries_signal(compute_features(_signals()[0], config), config).mean() > 0.8
        )  # 0.87: its pauses are quiet


def test_digital_silence_is_normalised_globally_not_blown_up():
    """3 s of zeros (or of -75 dBFS noise) has no level or channel of its own: per-speaker
    normalisation must leave it as far below speech as the global statistics put it."""
    speech = compute_features(_signals()[0], MFCC)
    prior = global_stats(speech)
    for silence in (np.zeros(3 * RATE), np.random.default_rng(1).standard_normal(3 * RATE) * 1e-4):
        raw = compute_features(silence, MFCC)
        (normalised,) = normalize_speaker([raw], MFCC, prior)
        np.testing.assert_allclose(normalised, normalize(raw, prior["mean"], prior["std"]))
        assert normalised[:, 0].max() < -3  # c0: far quieter than the speech


def test_a_short_recording_loses_its_level_and_channel():
    """3 s of frames with every cepstral coefficient offset (a gain, a microphone's
    response): after per-speaker normalisation nearly the same features."""
    rng = np.random.default_rng(0)
    prior = {"mean": [0.0] * 13, "std": [1.0] * 13, "frames": 10**6}
    frames = rng.standard_normal((300, 13)) * 2
    offset = frames + rng.uniform(-20, 20, 13)
    a = normalize(frames, *speaker_stats(frames, prior))
    b = normalize(offset, *speaker_stats(offset, prior))
    assert np.abs(a - b).max() < 0.15 * np.abs(a).max()  # 0.11 (with a 100-frame mean prior: 0.9)


def test_normalize_speaker_follows_the_config():
    features = compute_features(_signals()[0], MFCC) + 4
    stats = {"mean": [1.0] * 39, "std": [2.0] * 39, "frames": 1000}
    (glob,) = normalize_speaker([features], FeatureConfig(normalization="global"), stats)
    np.testing.assert_allclose(glob, (features - 1) / 2, atol=1e-5)
    (per_speaker,) = normalize_speaker([features], MFCC, stats)
    mean, std = normalization_stats(MFCC, stats, Moments().add(features, MFCC))
    np.testing.assert_allclose(per_speaker, (features - mean) / std, atol=1e-5)
    assert abs(float(per_speaker.mean())) < 0.5  # its own mean removed


def test_running_normalizer_ends_at_the_whole_recording_statistics():
    features = compute_features(_signals()[0], MFCC)
    stats = global_stats(features)
    running = RunningNormalizer(MFCC, stats)
    pieces = [running(features[i : i + 37]) for i in range(0, len(features), 37)]
    streamed = np.concatenate(pieces)
    (whole,) = normalize_speaker([features], MFCC, stats)
    np.testing.assert_allclose(streamed[-1], whole[-1], atol=1e-4)  # same statistics at the end
    assert not np.allclose(streamed[MIN_SIGNAL_FRAMES + 5], whole[MIN_SIGNAL_FRAMES + 5])


def test_feature_config_refuses_unknown_keys():
    with pytest.raises(PhonelabelError, match="hop"):
        FeatureConfig.from_dict({**FeatureConfig().to_dict(), "hop": 160})


def test_feature_config_round_trips_through_json():
    config = FeatureConfig(kind="fbank", normalization="global", delta_width=7)
    assert FeatureConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert FeatureConfig().normalization == "speaker" and FeatureConfig().dim == 39


def test_feature_config_refuses_unknown_choices():
    with pytest.raises(PhonelabelError, match="plp"):
        FeatureConfig(kind="plp")
    with pytest.raises(PhonelabelError, match="cepstral"):
        FeatureConfig(normalization="cepstral")
