"""Recording conditions for ``phonelabel synth``: make clean engine speech sound recorded.

Synthetic voices are recorded nowhere: digital silence, no room, no microphone, no noise.
A model trained on them meets all of these at once on its first real recording. Each
utterance therefore gets, drawn from its own seeded RNG (so a corpus stays byte-identical
for a seed whatever the number of jobs):

- ``tone``: room tone under everything, coloured (white, pink or brown) noise at -62 to
  -45 dBFS RMS, so silence is never digital zero or bare dither (always on);
- ``room``: a simulated room (pyroomacoustics image-source model: a shoebox of 3-9 m by
  3-8 m by 2.4-3.5 m, RT60 0.15-0.55 s, talker and microphone anywhere 0.5 m from the
  walls), with the direct path kept at time 0 so the phone alignment still holds
  (probability 0.35: TIMIT was read in a booth, real users are in rooms);
- ``noise``: coloured noise at 10-35 dB SNR (probability 0.4);
- ``babble``: 2-4 other talkers made from the other prompts of the same engine call,
  each resampled (0.85-1.2: another pitch and vocal tract) and shifted, at 5-20 dB SNR
  (probability 0.25);
- ``channel``: a microphone and preamp response, high-pass 40-250 Hz, one peaking band
  +-8 dB somewhere in 300-4000 Hz, and half the time a low-pass at 3.5-7.5 kHz
  (probability 0.5);
- ``phone``: a telephone line, band 300-3400 Hz and G.711 mu-law at 8 kHz
  (probability 0.06; it replaces ``channel``);
- ``gain``: the level, -12 to +3 dB around the engine's (always on, peak kept below 0.99);
- ``silence``: lead-in and lead-out room for 30 % of the utterances, 0.2-2.0 s each
  (log-uniform, drawn apart for the start and the end) of the engine's silence added before and after the utterance and
  labelled ``h#``, heard through every other condition (its room tone, noise, babble):
  the engines open and close with at most a few hundred ms of silence, and a model that
  never heard a long noise floor calls part of one a closure (always on). Its lengths
  come from their own RNG stream (``room_tone_lengths``), so every other draw stays as
  it was without it.

All noise is drawn by ``coloured_noise`` and set to its level by ``add_noise``.

``vtlp`` is a speaker property (``synth.plan_speakers``): each speaker's vocal tract
length by resampling, with the engine's F0 set so that pitch lands in its own range.
"""

from __future__ import annotations

import numpy as np
import soxr

CONDITIONS = ("vtlp", "tone", "room", "noise", "babble", "channel", "phone", "gain", "silence")
PROBABILITY = {"room": 0.35, "noise": 0.4, "babble": 0.25, "channel": 0.5, "phone": 0.06}
ROOM_TONE_SECONDS = (0.2, 2.0)  # lead-in and lead-out, each drawn log-uniform in this range
SILENCE_SHARE = 0.3  # of the utterances get them: long floors heard, the corpus not mostly h#


def parse_conditions(text: str) -> tuple[str, ...]:
    """``all``, ``none`` or a comma list of CONDITIONS, as a sorted tuple."""
    from phonelabel.errors import PhonelabelError

    text = text.strip().lower()
    if text == "all":
        return tuple(sorted(CONDITIONS))
    if text in ("none", ""):
        return ()
    names = {t.strip() for t in text.split(",") if t.strip()}
    unknown = sorted(names - set(CONDITIONS))
    if unknown:
        raise PhonelabelError(
            f"unknown condition {', '.join(unknown)} (known: all, none, {', '.join(CONDITIONS)})"
        )
    return tuple(sorted(names))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2) + 1e-20))


def coloured_noise(rng: np.random.Generator, n: int, colour: str, rate: int) -> np.ndarray:
    """Unit-RMS noise whose power falls as 1/f**beta (white 0, pink 1, brown 2)."""
    beta = {"white": 0.0, "pink": 1.0, "brown": 2.0}[colour]
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.fft.rfftfreq(n, 1 / rate)
    spectrum *= 1 / np.maximum(f, 20.0) ** (beta / 2)
    noise = np.fft.irfft(spectrum, n)
    return noise / _rms(noise)


def _at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    return noise * (_rms(speech) / _rms(noise)) / 10 ** (snr_db / 20)


def add_noise(
    x: np.ndarray,
    noise: np.ndarray,
    snr_db: float | None = None,
    dbfs: float | None = None,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """``x`` plus ``noise`` (same length) set to ``snr_db`` below the RMS of ``reference``
    (default ``x``: the speech the noise is heard against), or scaled by ``dbfs`` (dB re
    full scale; the RMS it gets when ``noise`` has unit RMS, as ``coloured_noise`` draws it).
    The one rule for the level of every noise ``synth`` adds."""
    if (snr_db is None) == (dbfs is None):
        raise ValueError("give exactly one of snr_db and dbfs")
    if snr_db is not None:
        return x + _at_snr(x if reference is None else reference, noise, snr_db)
    return x + noise * 10 ** (dbfs / 20)


def room_tone_lengths(rng: np.random.Generator, rate: int) -> tuple[int, int]:
    """Samples of lead-in and lead-out silence (``silence``): for a SILENCE_SHARE of the
    utterances, each log-uniform in ROOM_TONE_SECONDS (as many under 0.63 s as over it),
    else none. Long floors are heard without making the corpus mostly silence (every
    utterance padded made a 4-epoch demo model call everything h#)."""
    low, high = np.log(ROOM_TONE_SECONDS)
    lead_in, lead_out = np.exp(rng.uniform(low, high, size=2))
    if rng.random() >= SILENCE_SHARE:
        return 0, 0
    return round(float(lead_in) * rate), round(float(lead_out) * rate)


def room_impulse_response(rng: np.random.Generator, rate: int) -> np.ndarray:
    """A shoebox room's impulse response, talker to microphone, direct path at index 0."""
    import pyroomacoustics as pra  # 1-4 s to import: only where a room is wanted

    dims = rng.uniform((3.0, 3.0, 2.4), (9.0, 8.0, 3.5))
    rt60 = float(rng.uniform(0.15, 0.55))
    absorption, order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=rate, materials=pra.Material(absorption), max_order=min(order, 60))
    talker = rng.uniform(0.5, dims - 0.5)
    talker[2] = rng.uniform(1.1, min(1.9, dims[2] - 0.3))
    room.add_source(talker)
    room.add_microphone(rng.uniform(0.5, dims - 0.5))
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    direct = int(np.argmax(np.abs(rir)))
    return rir[direct:] / abs(rir[direct])


def _filter(samples: np.ndarray, sos: np.ndarray) -> np.ndarray:
    from scipy.signal import sosfilt

    return sosfilt(sos, samples)


def _channel(rng: np.random.Generator, x: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import butter

    x = _filter(x, butter(2, rng.uniform(40, 250), "highpass", fs=rate, output="sos"))
    centre, gain, q = rng.uniform(300, 4000), rng.uniform(-8, 8), rng.uniform(0.7, 2.0)
    x = _peaking(x, centre, gain, q, rate)
    if rng.random() < 0.5:
        x = _filter(x, butter(4, rng.uniform(3500, 7500), "lowpass", fs=rate, output="sos"))
    return x


def _peaking(x: np.ndarray, centre: float, gain_db: float, q: float, rate: int) -> np.ndarray:
    """RBJ cookbook peaking equaliser."""
    from scipy.signal import lfilter

    a_gain = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * centre / rate
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a_gain, -2 * np.cos(w0), 1 - alpha * a_gain])
    a = np.array([1 + alpha / a_gain, -2 * np.cos(w0), 1 - alpha / a_gain])
    return lfilter(b / a[0], a / a[0], x)


def _telephone(x: np.ndarray, rate: int) -> np.ndarray:
    import librosa
    from scipy.signal import butter

    narrow = soxr.resample(x, rate, 8000, "HQ")
    narrow = _filter(narrow, butter(4, (300, 3400), "bandpass", fs=8000, output="sos"))
    peak = max(float(np.max(np.abs(narrow))), 1e-9)
    coded = librosa.mu_expand(librosa.mu_compress(narrow / peak, mu=255), mu=255) * peak
    out = soxr.resample(coded, 8000, rate, "HQ")
    return np.pad(out, (0, max(0, len(x) - len(out))))[: len(x)]


def _babble(
    rng: np.random.Generator, n: int, others: list[np.ndarray], rate: int
) -> np.ndarray | None:
    if not others:
        return None
    talkers = int(rng.integers(2, 5))
    mix = np.zeros(n)
    for _ in range(talkers):
        source = others[int(rng.integers(len(others)))]
        factor = float(rng.uniform(0.85, 1.2))
        voice = np.asarray(soxr.resample(source, rate * factor, rate, "HQ"), dtype=np.float64)
        voice = np.tile(voice, n // max(len(voice), 1) + 2)
        start = int(rng.integers(len(voice) - n))
        mix += voice[start : start + n] / _rms(voice)
    return mix


def apply_conditions(
    samples: np.ndarray,
    rng: np.random.Generator,
    conditions: tuple[str, ...],
    others: list[np.ndarray],
    rate: int,
    speech: slice = slice(None),
) -> tuple[np.ndarray, tuple[str, ...]]:
    """``samples`` (N,) float as heard through the drawn conditions (same length), and
    the names of those applied.

    ``others``: the other utterances of the same engine call, for babble. ``speech``: the
    engine's utterance within ``samples`` (without the ``silence`` lead-in and lead-out),
    whose level the SNRs refer to.
    """
    x = np.asarray(samples, dtype=np.float64)
    n, applied = len(x), []
    level = _rms(x[speech])

    def drawn(name: str) -> bool:  # always draws, so one condition's choice moves no other
        return bool(rng.random() < PROBABILITY[name]) and name in conditions

    room, noise, babble, channel, phone = (
        drawn(c) for c in ("room", "noise", "babble", "channel", "phone")
    )
    if room:
        from scipy.signal import fftconvolve

        x = fftconvolve(x, room_impulse_response(rng, rate))[:n]
        x *= level / _rms(x[speech])
        applied.append("room")
    if babble:
        mix = _babble(rng, n, others, rate)
        if mix is not None:
            x = x + _at_snr(x[speech], mix, float(rng.uniform(5, 20)))
            applied.append("babble")
    if noise:
        colour = ("white", "pink", "brown")[int(rng.integers(3))]
        noise_samples = coloured_noise(rng, n, colour, rate)  # drawn before its SNR
        x = add_noise(x, noise_samples, snr_db=float(rng.uniform(10, 35)), reference=x[speech])
        applied.append(f"noise:{colour}")
    if phone:
        x = _telephone(x, rate)
        applied.append("phone")
    elif channel:
        x = _channel(rng, x, rate)
        applied.append("channel")
    if "gain" in conditions:
        x = x * 10 ** (float(rng.uniform(-12, 3)) / 20)
        applied.append("gain")
    if "tone" in conditions:  # the floor of the recording as written: after the gain
        colour = ("white", "pink", "brown")[int(rng.integers(3))]
        dbfs = float(rng.uniform(-62, -45))
        x = add_noise(x, coloured_noise(rng, n, colour, rate), dbfs=dbfs)
        applied.append("tone")
    peak = float(np.max(np.abs(x)))
    if peak > 0.99:
        x *= 0.99 / peak
    return x, tuple(applied)
