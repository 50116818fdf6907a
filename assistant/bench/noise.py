"""Noise for the spoken corpus: pink, babble and hum, each deterministic for a seed and at unit RMS.

- *pink*: 1/f power, like a room's broadband noise;
- *babble*: several other utterances of the corpus mixed together, each from a random point and
  looped, like people talking in the next room (no word of it is meant to be heard);
- *hum*: mains hum (50 or 60 Hz and its harmonics) under a fan's low-passed noise.

``noise`` makes any of them; ``scaled_to_snr`` finds the gain for a speech-to-noise ratio;
``fade`` shapes the noise bed the bench lays under the gap before a noisy item.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from assistant.errors import AudioError
from assistant.messages import SAMPLE_RATE

NOISE_KINDS = ("pink", "babble", "hum")
"""The kinds of noise the corpus mixes in (besides none: ``clean``)."""
BABBLE_TALKERS = 24
"""Utterances summed into babble: a crowd (a canteen, a party next door). With 5 or 6 voices the
VAD took the babble for a talker before 6 of the corpus's 15 babble items (in the bench's stream);
with 24, before 1."""
HUM_HARMONICS = 8
FAN_CUTOFF_HZ = 400.0
"""The fan's noise is low-passed here (a smooth roll-off, 24 dB per octave above)."""

PARAMETERS = (BABBLE_TALKERS, HUM_HARMONICS, FAN_CUTOFF_HZ)
"""What shapes the noises besides their seeds (part of the corpus's cache key)."""

Samples = npt.NDArray[np.float32]


def rms(samples: Samples) -> float:
    """Root mean square of float samples (fraction of full scale)."""
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0


def _unit(noise: npt.NDArray[np.float64]) -> Samples:
    level = float(np.sqrt(np.mean(noise**2))) if noise.size else 0.0
    return (noise / (level or 1.0)).astype(np.float32)


def pink_noise(n: int, seed: int) -> Samples:
    """``n`` samples of pink (1/f power) noise with unit RMS, deterministic for a ``seed``."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    return _unit(np.fft.irfft(spectrum / np.sqrt(freqs), n))


def babble(sources: Sequence[Samples], n: int, seed: int, talkers: int = BABBLE_TALKERS) -> Samples:
    """``n`` samples of babble with unit RMS: ``talkers`` of ``sources`` (other utterances, 16 kHz
    float), each normalised to the same RMS, looped from a random point, summed. The choice of
    sources and points depends only on ``seed``."""
    usable = [s for s in sources if rms(s) > 0]
    if not usable:
        raise AudioError("corpus: babble needs at least one audible utterance to mix")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(usable), size=min(talkers, len(usable)), replace=False)
    mix = np.zeros(n, np.float64)
    for index in picks:
        source = usable[int(index)].astype(np.float64) / rms(usable[int(index)])
        start = int(rng.integers(source.size))
        reps = -(-(n + start) // source.size)
        mix += np.tile(source, reps)[start : start + n]
    return _unit(mix)


def hum(n: int, seed: int, mains_hz: float | None = None) -> Samples:
    """``n`` samples of hum with unit RMS: mains (50 or 60 Hz, chosen by ``seed`` unless given) with
    ``HUM_HARMONICS`` harmonics falling off as 1/k, random phases, and a fan's noise low-passed at
    ``FAN_CUTOFF_HZ``, the two at equal power."""
    rng = np.random.default_rng(seed)
    f0 = mains_hz if mains_hz is not None else (50.0, 60.0)[int(rng.integers(2))]
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    tone = np.zeros(n, np.float64)
    for k in range(1, HUM_HARMONICS + 1):
        if k * f0 < SAMPLE_RATE / 2:
            tone += np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    fan = np.fft.irfft(spectrum / (1.0 + (freqs / FAN_CUTOFF_HZ) ** 4), n)
    return _unit(_unit(tone).astype(np.float64) + _unit(fan).astype(np.float64))


def noise(kind: str, n: int, seed: int, sources: Sequence[Samples] = ()) -> Samples:
    """``n`` samples of ``kind`` (one of ``NOISE_KINDS``) at unit RMS; babble mixes ``sources``."""
    if kind == "pink":
        return pink_noise(n, seed)
    if kind == "babble":
        return babble(sources, n, seed)
    if kind == "hum":
        return hum(n, seed)
    raise AudioError(f"corpus: unknown noise kind {kind!r}: choose one of {', '.join(NOISE_KINDS)}")


def snr_gain(speech: Samples, unit_noise: Samples, snr_db: float) -> float:
    """The gain that puts ``unit_noise`` ``snr_db`` dB below ``speech`` (RMS over the same samples)."""
    return float(rms(speech) / (rms(unit_noise) or 1.0) / (10.0 ** (snr_db / 20.0)))


def fade(n: int, fade_in: int, fade_out: int = 0) -> Samples:
    """An envelope of ``n`` samples rising over the first ``fade_in`` (raised cosine) and falling over
    the last ``fade_out``; 1 between. Fades longer than ``n`` are cut to it."""
    envelope = np.ones(n, np.float64)
    for length, at_start in ((min(fade_in, n), True), (min(fade_out, n), False)):
        if length > 0:
            ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(length) + 0.5) / length)
            if at_start:
                envelope[:length] *= ramp
            else:
                envelope[n - length :] *= ramp[::-1]
    return envelope.astype(np.float32)
