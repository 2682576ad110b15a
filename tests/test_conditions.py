"""Recording conditions for ``phonelabel synth`` (phonelabel/corpus/conditions.py): rooms,
noise, babble, microphones, telephone, room tone, level, and vocal tract length per speaker.
The conditions change what the audio sounds like, never where its phones are."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
from conftest import FLITE_CORPUS

from phonelabel.corpus import conditions as cond
from phonelabel.corpus import synth
from phonelabel.corpus.timit import find_utterances, read_phn
from phonelabel.errors import PhonelabelError

RATE = 16000


def test_condition_lists_parse_and_unknown_names_are_refused():
    assert cond.parse_conditions("all") == tuple(sorted(cond.CONDITIONS))
    assert cond.parse_conditions("none") == ()
    assert cond.parse_conditions(" room, tone ,room") == ("room", "tone")
    with pytest.raises(PhonelabelError, match="unknown condition reverb"):
        cond.parse_conditions("room,reverb")


def test_room_keeps_the_direct_path_at_time_zero_and_rings_after_it():
    rir = cond.room_impulse_response(np.random.default_rng(3), RATE)
    assert rir[0] == 1.0 and np.abs(rir).max() == 1.0
    energy = np.cumsum(rir**2) / np.sum(rir**2)
    assert energy[8] < 0.6  # reflections carry much of the energy: a room, not a delay
    tail = int(np.searchsorted(energy, 0.999))
    assert 0.03 * RATE < tail < 0.8 * RATE  # RT60 0.15-0.55 s leaves a tail of that order
    clicks = np.zeros(RATE)
    clicks[[1000, 7000, 12000]] = 1.0
    heard = np.convolve(clicks, rir)[:RATE]
    onsets = [i for i in range(1, RATE) if heard[i] >= 0.99 and abs(heard[i - 1]) < 0.99]
    assert onsets[:3] == [1000, 7000, 12000]  # each sound starts where it was spoken


def test_telephone_removes_the_band_above_3400_hz():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(RATE) * 0.1
    y = cond._telephone(x, RATE)
    spectrum = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(RATE, 1 / RATE)
    inside = spectrum[(f > 500) & (f < 3000)].mean()
    assert spectrum[f > 4500].mean() < 1e-3 * inside
    assert spectrum[f < 150].mean() < 0.1 * inside
    assert len(y) == RATE


def test_conditions_are_seeded_keep_length_and_fill_digital_silence():
    t = np.arange(2 * RATE) / RATE
    speech = np.where((t > 0.5) & (t < 1.5), 0.3 * np.sin(2 * np.pi * 220 * t), 0.0)
    other = 0.2 * np.sin(2 * np.pi * 330 * t[:RATE])
    names = cond.parse_conditions("all")
    a, applied = cond.apply_conditions(speech, np.random.default_rng(5), names, [other], RATE)
    b, _ = cond.apply_conditions(speech, np.random.default_rng(5), names, [other], RATE)
    assert np.array_equal(a, b) and len(a) == len(speech)
    assert "tone" in applied and "gain" in applied
    silence = a[: int(0.4 * RATE)]
    assert np.all(np.abs(silence[::160]) > 0) or np.std(silence) > 1e-5  # never digital zero
    assert np.max(np.abs(a)) <= 0.99
    untouched, none = cond.apply_conditions(speech, np.random.default_rng(5), (), [other], RATE)
    assert none == () and np.array_equal(untouched, speech)
    # over many draws each condition turns up about as often as PROBABILITY says
    counts = dict.fromkeys(("room", "babble", "noise", "channel", "phone"), 0)
    short = speech[: RATE // 2 + 4000]
    for seed in range(60):
        _, applied = cond.apply_conditions(short, np.random.default_rng(seed), names, [other], RATE)
        for name in counts:
            counts[name] += any(a.startswith(name) for a in applied)
    assert 5 <= counts["room"] <= 40 and 3 <= counts["babble"] <= 30
    assert counts["phone"] <= 12 and counts["channel"] >= 12


def test_noise_is_set_against_the_speech_or_to_a_full_scale_level():
    rng = np.random.default_rng(0)
    speech = 0.1 * np.sin(np.arange(RATE) / 7)
    padded = np.pad(speech, (RATE, RATE))  # a second of silence either side
    noise = cond.coloured_noise(rng, len(padded), "pink", RATE)
    assert abs(np.sqrt(np.mean(noise**2)) - 1) < 1e-9
    heard = cond.add_noise(padded, noise, snr_db=20.0, reference=padded[RATE:-RATE])
    added = heard - padded
    snr = 10 * np.log10(np.mean(speech**2) / np.mean(added**2))
    assert abs(snr - 20.0) < 1e-6  # against the speech, not the silence around it
    floor = cond.add_noise(np.zeros(RATE), noise[:RATE] / np.sqrt(np.mean(noise[:RATE] ** 2)),
                           dbfs=-50.0)  # fmt: skip
    assert abs(10 * np.log10(np.mean(floor**2)) + 50.0) < 1e-6
    with pytest.raises(ValueError, match="exactly one"):
        cond.add_noise(padded, noise, snr_db=10.0, dbfs=-50.0)


def test_room_tone_lengths_are_seeded_and_spread_over_their_range():
    draws = [cond.room_tone_lengths(np.random.default_rng([s, 11]), RATE) for s in range(400)]
    assert draws[:5] == [cond.room_tone_lengths(np.random.default_rng([s, 11]), RATE)
                         for s in range(5)]  # fmt: skip
    padded = [d for d in draws if d != (0, 0)]  # a share of the utterances, not all
    assert 0.22 < len(padded) / len(draws) < 0.38, len(padded)
    seconds = np.array(padded) / RATE
    low, high = cond.ROOM_TONE_SECONDS
    assert seconds.min() >= low and seconds.max() <= high
    assert (seconds > 1.5).mean() > 0.05  # long floors are heard, not only short ones
    assert 0.5 < np.median(seconds) < 0.8  # log-uniform: median sqrt(0.2 * 2.0) = 0.63 s
    assert len(set(padded)) == len(padded)


def test_vtlp_speakers_vary_vocal_tract_and_keep_pitch_in_range():
    plans = synth.plan_speakers(40, ("festival", "flite"), 0, vtlp=True)
    factors = [s.pitch_resample for s in plans]
    assert min(factors) >= synth.VTLP_RANGE[0] and max(factors) <= synth.VTLP_RANGE[1]
    assert len(set(factors)) > 10
    for s in plans:
        base = synth.tts.voice(s.voice).base_f0
        if base is not None:  # engine F0 after resampling lands in the voice's own range
            heard = s.f0 * s.pitch_resample / base
            assert synth.F0_RANGE[0] - 0.02 <= heard <= synth.F0_RANGE[1] + 0.02


@pytest.mark.slow
def test_conditions_change_the_audio_never_the_labels(flite_corpus, tmp_path):
    report = synth.synthesize(
        tmp_path / "heard", conditions="tone,room,noise,babble,channel,phone,gain", **FLITE_CORPUS
    )
    assert report.synthesized == 8 and not report.skipped
    clean = {u.utt_id: u for u in find_utterances(flite_corpus)}
    changed = 0
    for u in find_utterances(tmp_path / "heard"):
        c = clean[u.utt_id]
        for suffix in (".PHN", ".WRD", ".TXT"):
            assert (
                u.audio.with_suffix(suffix).read_bytes() == c.audio.with_suffix(suffix).read_bytes()
            )
        heard, _ = soundfile.read(str(u.audio), dtype="int16")
        original, _ = soundfile.read(str(c.audio), dtype="int16")
        assert len(heard) == len(original)
        changed += not np.array_equal(heard, original)
        quietest = [  # the quietest 25 ms: room tone, not the engine's zeros plus dither
            np.sqrt(
                np.mean(
                    np.lib.stride_tricks.sliding_window_view(x.astype(float), 400)[::160] ** 2,
                    axis=1,
                )
            ).min()
            for x in (heard, original)
        ]
        floor = 32768 * 10 ** (-62 / 20)  # the quietest room tone, in int16 units
        assert quietest[0] > 0.8 * floor and quietest[0] != quietest[1]
        assert len(read_phn(u.alignment, len(heard))) > 5
    assert changed == 8
