"""TIMIT allophone rules on hand-made engine phone sequences (corpus/allophones.py)."""

from __future__ import annotations

import numpy as np

from phonelabel.corpus import engines as tts
from phonelabel.corpus.allophones import EnginePhone, realize

RATE = 16000


def phones(spec: str, ms: int = 80, short: int = 30) -> list[EnginePhone]:
    """``"pau dh/0/0 ax/0/0 b/1/1 ..."``: label/stress/word (word "-" or absent: silence);
    a label ending in "!" lasts ``short`` ms, every other ``ms``."""
    out, start = [], 0
    for token in spec.split():
        label, *rest = token.split("/")
        length = (short if label.endswith("!") else ms) * RATE // 1000
        stress = int(rest[0]) if rest else 0
        word = int(rest[1]) if len(rest) > 1 and rest[1] != "-" else None
        out.append(EnginePhone(label.rstrip("!"), start, start + length, stress, word))
        start += length
    return out


def labels(spec: str, samples: np.ndarray | None = None, **kw) -> str:
    seq = phones(spec, **kw)
    if samples is None:
        samples = voiced(seq[-1].end)
    return " ".join(p.label for p in realize(seq, samples))


def voiced(n: int) -> np.ndarray:
    """A 120 Hz glottal-pulse-like wave: strongly periodic."""
    t = np.arange(n) / RATE
    return (0.3 * np.sin(2 * np.pi * 120 * t) + 0.1 * np.sin(2 * np.pi * 360 * t)).astype(
        np.float32
    )


def noise(n: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)


def test_unstressed_er_is_axr_stressed_stays_er():
    assert labels("pau b/1/0 ah/1/0 t!/0/0 er/0/0 pau") == "pau b ah dx axr pau"
    assert labels("pau b/1/0 er/1/0 d/1/0 pau") == "pau b er d pau"


def test_flap_needs_a_short_stop_between_a_vowel_and_an_unstressed_vowel():
    assert labels("pau b/1/0 ah/1/0 t!/0/0 ax/0/0 pau") == "pau b ah dx ax pau"
    # long in the audio: closure and burst stay
    assert labels("pau b/1/0 ah/1/0 t/0/0 er/0/0 pau") == "pau b ah t axr pau"
    # before a stressed vowel ("attack"): no flap
    assert labels("pau ax/0/0 t!/1/0 ae/1/0 k/1/0 pau") == "pau ix t ae k pau"
    # after a consonant ("after"): no flap
    assert labels("pau ae/1/0 f/1/0 t!/0/0 er/0/0 pau") == "pau ae f t axr pau"
    # word-initial t after a vowel ("a toe"): no flap
    assert labels("pau ax/0/0 t!/1/1 ow/1/1 pau") == "pau ix t ow pau"


def test_word_final_stop_flaps_before_a_vowel_initial_word():
    assert labels("pau g/1/0 eh/1/0 t!/1/0 ax/0/1 pau") == "pau g eh dx ax pau"  # "get a"
    assert labels("pau g/1/0 eh/1/0 d!/1/0 ow/1/1 pau") == "pau g eh dx ow pau"
    # ... not before a consonant-initial word
    assert labels("pau g/1/0 eh/1/0 t!/1/0 m/1/1 iy/1/1 pau") == "pau g eh t m iy pau"


def test_nasal_flap_inside_a_word_only():
    assert labels("pau w/1/0 ih/1/0 n!/0/0 er/0/0 pau") == "pau w ih nx axr pau"
    assert labels("pau w/1/0 ih/1/0 n/0/0 er/0/0 pau") == "pau w ih n axr pau"  # long
    assert labels("pau ax/0/0 n!/1/1 ey/1/1 pau") == "pau ix n ey pau"  # "a nay"


def test_syllabic_consonants_join_schwa_and_consonant():
    seq = phones("pau b/1/0 aa/1/0 t/0/0 ax/0/0 l/0/0 pau")
    out = realize(seq, voiced(seq[-1].end))
    assert [p.label for p in out] == "pau b aa t el pau".split()
    assert (out[4].start, out[4].end) == (seq[4].start, seq[5].end)  # one span, no gap
    assert labels("pau b/1/0 ah/1/0 t/0/0 ax/0/0 n/0/0 pau") == "pau b ah t en pau"
    assert labels("pau b/1/0 aa/1/0 t/0/0 ax/0/0 l/0/0 z/0/0 pau") == "pau b aa t el z pau"
    assert labels("pau r/1/0 ih/1/0 dh/0/0 ax/0/0 m/0/0 pau") == "pau r ih dh ax m pau"
    assert labels("pau ah/1/0 p/0/0 ax/0/0 m/0/0 pau") == "pau ah p em pau"


def test_no_syllabic_without_consonant_before_or_with_vowel_after():
    # "lemon": n after m, not homorganic -> schwa stays (ix before n)
    assert labels("pau l/1/0 eh/1/0 m/0/0 ax/0/0 n/0/0 pau") == "pau l eh m ix n pau"
    # "balloon"-like: a vowel follows in the word
    assert labels("pau b/0/0 ax/0/0 l/1/0 uw/1/0 n/1/0 pau") == "pau b ax l uw n pau"
    # "a lot": the l starts the next word
    assert labels("pau ax/0/0 l/1/1 aa/1/1 t/1/1 pau") == "pau ax l aa t pau"
    # after a vowel ("the" + "l...")
    assert labels("pau ay/1/0 ax/0/0 l/0/0 pau") == "pau ay ax l pau"


def test_ix_for_unstressed_ih_and_schwa_before_coronals():
    assert labels("pau r/1/0 ow/1/0 z/0/0 ih/0/0 z/0/0 pau") == "pau r ow z ix z pau"
    assert labels("pau dh/0/0 ax/0/0 d/1/1 ao/1/1 g/1/1 pau") == "pau dh ix d ao g pau"
    assert labels("pau dh/0/0 ax/0/0 b/1/1 ao/1/1 l/1/1 pau") == "pau dh ax b ao l pau"
    assert labels("pau b/1/0 ih/1/0 g/1/0 pau") == "pau b ih g pau"  # stressed ih


def test_devoiced_schwa_needs_voiceless_neighbours_and_unvoiced_audio():
    spec = "pau s/0/0 ax!/0/0 p/1/0 ow/1/0 z/1/0 pau"
    seq = phones(spec)
    samples = voiced(seq[-1].end)
    samples[seq[2].start : seq[2].end] = noise(seq[2].end - seq[2].start)
    assert labels(spec, samples) == "pau s ax-h p ow z pau"
    assert labels(spec) == "pau s ax p ow z pau"  # voiced schwa in the audio
    seq = phones("pau b/0/0 ax!/0/0 p/1/0 ow/1/0 pau")
    samples = noise(seq[-1].end)  # unvoiced, but b is voiced
    assert labels("pau b/0/0 ax!/0/0 p/1/0 ow/1/0 pau", samples) == "pau b ax p ow pau"


def test_voiced_h_between_voiced_sounds_only_when_the_audio_is_voiced():
    spec = "pau ax/0/0 hh/1/0 eh/1/0 d/1/0 pau"
    assert labels(spec) == "pau ax hv eh d pau"
    seq = phones(spec)
    samples = voiced(seq[-1].end)
    samples[seq[2].start : seq[2].end] = noise(seq[2].end - seq[2].start)
    assert labels(spec, samples) == "pau ax hh eh d pau"
    assert labels("pau hh/1/0 aw/1/0 s/1/0 pau") == "pau hh aw s pau"  # after a pause
    assert labels("pau s/1/0 hh/1/1 aw/1/1 pau") == "pau s hh aw pau"  # after voiceless


def test_epenthetic_silence_only_where_the_audio_is_silent_between_fricative_and_nasal():
    spec = "pau ih/1/0 s/1/0 m/1/1 ey/1/1 pau"
    seq = phones(spec)
    samples = voiced(seq[-1].end)
    samples[seq[2].start : seq[2].end] = noise(seq[2].end - seq[2].start)
    gap = (seq[3].start - 160, seq[3].start + 160)  # 20 ms of silence across the boundary
    samples[gap[0] : gap[1]] = 0
    out = realize(seq, samples)
    assert [p.label for p in out] == "pau ih s epi m ey pau".split()
    epi = out[3]
    assert gap[0] - 40 <= epi.start and epi.end <= gap[1] + 40 and epi.end - epi.start >= 160
    assert out[2].end == epi.start and out[4].start == epi.end  # still tiles
    samples[gap[0] : seq[3].start] = noise(160)  # no gap: s runs into m
    samples[seq[3].start : gap[1]] = voiced(160)
    assert [p.label for p in realize(seq, samples)] == "pau ih s m ey pau".split()
    # the same silence between a vowel and m is not epi
    seq = phones("pau ih/1/0 m/1/0 ey/1/0 pau")
    samples = voiced(seq[-1].end)
    samples[seq[2].start - 160 : seq[2].start + 160] = 0
    assert "epi" not in [p.label for p in realize(seq, samples)]


def test_fronted_u_after_coronals_and_y():
    assert labels("pau d/1/0 uw/1/0 d/1/0 pau") == "pau d ux d pau"
    assert labels("pau y/1/0 uw/1/0 pau") == "pau y ux pau"
    assert labels("pau n/1/0 uw/1/0 pau") == "pau n ux pau"
    assert labels("pau b/1/0 uw/1/0 t/1/0 pau") == "pau b uw t pau"  # "boot"
    assert labels("pau r/1/0 uw/1/0 l/1/0 pau") == "pau r uw l pau"  # "rule"


def test_to_timit_applies_the_rules_only_with_stress_and_words():
    seq = phones("pau b/1/0 ah/1/0 t!/0/0 er/0/0 pau")
    spans = [p[:3] for p in seq]
    samples = voiced(seq[-1].end)
    stress, words = [p.stress for p in seq], [p.word for p in seq]
    plain = [s[2] for s in tts.to_timit(spans, samples)]
    assert plain == "h# bcl b ah tcl t er h#".split()
    timit = tts.to_timit(spans, samples, stress=stress, word_of=words)
    assert [s[2] for s in timit] == "h# bcl b ah dx axr h#".split()
    assert all(a[1] == b[0] for a, b in zip(timit, timit[1:], strict=False))
    assert timit[0][0] == 0 and timit[-1][1] == seq[-1].end


def test_flite_stress_and_words_come_from_its_lexicon(tmp_path):
    from phonelabel.corpus.engines import flite, voice

    out = flite(voice("flite:kal16"), 1.0, None, "The butter is on a bottle.", tmp_path / "a.wav")
    assert not isinstance(out, str)
    spoken = [(p, s, w) for (p, _), s, w in zip(out.phones, out.stress, out.word_of, strict=True)]
    assert [w for _, _, w in spoken if w is not None] == sorted(
        w for _, _, w in spoken if w is not None
    )
    butter = [(p, s) for p, s, w in spoken if w == 1]
    assert butter == [("b", 0), ("ah", 1), ("t", 0), ("er", 0)]
    assert [w for w, _, _ in out.words] == "the butter is on a bottle".split()
