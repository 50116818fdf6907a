"""What the spoken corpus says, in which voices, how fast and in which noise.

The words: the original questions and commands (``QUESTIONS``, ``COMMANDS``: the wake word's bench
speaks these too), more of both (``MORE``), and utterances with a hesitation in the middle
(``PAUSED``: "Set a timer for ... five minutes."), which the endpointer must not cut in two.

The bench corpus does not make the cross product of utterances, voices (``BENCH_VOICES``), rates
(``RATES``) and noise conditions (``CONDITIONS``): ``assign`` gives each utterance ``variants``
takes from a balanced design. Each pass over the utterances (variant 0 first: the default
bench) is balanced by itself: every voice, rate, condition slot and pause length as often as any
other to within one, each voice heard in every noise kind and at both rates where its count allows.
Variants of one utterance never share a voice or a condition. Deterministic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from assistant.config import DeviceConfig


@dataclass(frozen=True)
class Voice:
    """One way of speaking the questions."""

    name: str
    """Short id used in item ids, e.g. ``piper`` or ``espeak-en-us``."""
    engine: str
    """``piper`` (the default voice of the pipeline) or ``espeak`` (espeak-ng)."""
    espeak_voice: str = ""
    """espeak-ng voice, with an optional variant (``en-us+f3``)."""
    speed: int = 175
    """espeak-ng words per minute."""
    pitch: int = 50
    """espeak-ng pitch, 0 to 99."""


@dataclass(frozen=True)
class Utterance:
    """What one corpus utterance says: one part, or two with a pause between."""

    parts: tuple[str, ...]
    command: bool = False
    """Meant for the intents stage (answered without the LLM)."""

    @property
    def text(self) -> str:
        """The reference transcript: the parts joined, no pause marker."""
        return " ".join(self.parts)

    @property
    def paused(self) -> bool:
        return len(self.parts) > 1


@dataclass(frozen=True)
class Condition:
    """The noise an item is heard in: ``clean``, or a kind of ``noise.NOISE_KINDS`` at an SNR."""

    noise: str
    snr_db: float | None = None

    @property
    def name(self) -> str:
        return self.noise if self.snr_db is None else f"{self.noise}{self.snr_db:g}"


@dataclass(frozen=True)
class Assignment:
    """One take of the designed corpus."""

    utterance: int
    """Index into the utterances."""
    variant: int
    """0 for the default bench; ``--all`` adds the others."""
    voice: str
    rate: str
    condition: Condition
    pause_ms: float | None
    """The pause asked of the synthesizer in a paused utterance (the item measures the real one)."""


QUESTIONS: tuple[str, ...] = (
    "What is the capital of France?",
    "What time is it?",
    "What is the weather like tomorrow?",
    "Will it rain today?",
    "What is two plus three?",
    "What is twelve times four?",
    "Turn on the kitchen lights.",
    "Turn off the living room lamp.",
    "Set a timer for ten minutes.",
    "What is the capital of Japan?",
    "Who wrote Romeo and Juliet?",
    "How far away is the moon?",
    "What does photosynthesis mean?",
    "Define the word gravity.",
    "Set the thermostat to twenty degrees.",
    "Play some music in the bedroom.",
    "How many days are in a leap year?",
    "What is the tallest mountain in the world?",
    "Remind me to call my mother tonight.",
    "What is the square root of eighty one?",
    "Lock the front door.",
    "How do you say hello in Spanish?",
    "What day is it today?",
    "Tell me a short joke.",
)
"""Questions a voice assistant commonly gets: facts, time, weather, arithmetic, definitions, home."""

COMMANDS: tuple[str, ...] = (
    "What is the current date?",
    "How much time is left on my timer?",
    "Turn on the living room lamp.",
    "Turn off the kitchen lights.",
    "Cancel the timer.",
)
"""More commands, answered by the intents stage without the LLM (as are the time, the timer and
the lights among ``QUESTIONS``): the date, a timer's status and its cancelling, the devices of
``DEVICES``. They come after the questions, so the timer they ask about is running."""

_QUESTION_COMMANDS = frozenset(
    {
        "What time is it?",
        "Turn on the kitchen lights.",
        "Turn off the living room lamp.",
        "Set a timer for ten minutes.",
        "What day is it today?",
    }
)

MORE: tuple[tuple[str, bool], ...] = (
    ("What is the boiling point of water?", False),
    ("Switch on the kitchen lights.", True),
    ("Who painted the Mona Lisa?", False),
    ("Turn up the volume.", True),
    ("How many legs does a spider have?", False),
    ("What time is it now?", True),
    ("What is the largest ocean on Earth?", False),
    ("Start a timer for three minutes.", True),
    ("Why is the sky blue?", False),
    ("Switch off the living room lamp.", True),
    ("How many minutes are in a day?", False),
    ("Turn the volume down.", True),
    ("Which planet is closest to the sun?", False),
    ("What's the date today?", True),
    ("What is eight minus five?", False),
    ("Translate thank you into French.", False),
    ("What is the population of Canada?", False),
    ("How do I make a cup of tea?", False),
    ("What is the speed of light?", False),
    ("Can you recommend a good book?", False),
    ("What is the time?", True),
    ("How many ounces are in a pound?", False),
)
"""(words, a command?) of more questions and commands; the commands were checked to match an
intent the handlers carry out (the lights of ``DEVICES``, the volume, time, date, timers)."""

PAUSED: tuple[tuple[tuple[str, str], bool], ...] = (
    (("Set a timer for", "five minutes."), True),
    (("What is the capital of", "Germany?"), False),
    (("Turn on the lights", "in the kitchen."), True),
    (("Remind me to", "buy some milk."), False),
    (("What is seven", "times eight?"), False),
    (("Turn the living room lamp", "off."), True),
    (("Who was the first person", "to walk on the moon?"), False),
    (("How much time is left", "on the timer?"), True),
    (("Set the thermostat to", "twenty two degrees."), False),
    (("Cancel", "all timers."), True),
)
"""Utterances with a hesitation between their two parts, where a person stops to think."""


def _interleaved() -> tuple[Utterance, ...]:
    plain = (
        [Utterance((q,), q in _QUESTION_COMMANDS) for q in QUESTIONS]
        + [Utterance((c,), True) for c in COMMANDS]
        + [Utterance((text,), command) for text, command in MORE]
    )
    out: list[Utterance] = []
    for i, utterance in enumerate(plain):
        out.append(utterance)
        if i % 5 == 4 and (i // 5) < len(PAUSED):
            parts, command = PAUSED[i // 5]
            out.append(Utterance(parts, command))
    return tuple(out)


UTTERANCES: tuple[Utterance, ...] = _interleaved()
"""The bench's utterances, in the order they are asked: the questions, the commands and the rest
of ``MORE``, a paused one after every fifth (so that a short ``--limit`` run hears some)."""

DEVICES: tuple[DeviceConfig, ...] = (
    DeviceConfig("kitchen lights", area="kitchen"),
    DeviceConfig("living room lamp", area="living room"),
)
"""The devices the corpus's commands switch: the bench declares them where its config does not."""

VOICES: tuple[Voice, ...] = (
    Voice("piper", "piper"),
    Voice("espeak-en-us", "espeak", "en-us", 160, 50),
    Voice("espeak-en-gb-rp", "espeak", "en-gb-x-rp", 140, 35),
    Voice("espeak-en-f3", "espeak", "en-us+f3", 185, 70),
)
"""A small set of voices for tests and the cross-product builder (``corpus.build_corpus``)."""

BENCH_VOICES: tuple[Voice, ...] = (
    Voice("piper", "piper"),
    Voice("espeak-en-us", "espeak", "en-us", 165, 50),
    Voice("espeak-en-gb", "espeak", "en-gb", 160, 50),
    Voice("espeak-en-gb-scotland", "espeak", "en-gb-scotland", 160, 45),
    Voice("espeak-en-gb-x-rp", "espeak", "en-gb-x-rp", 150, 35),
    Voice("espeak-en-gb-x-gbclan", "espeak", "en-gb-x-gbclan", 160, 50),
    Voice("espeak-en-gb-x-gbcwmd", "espeak", "en-gb-x-gbcwmd", 160, 50),
    Voice("espeak-en-029", "espeak", "en-029", 165, 50),
    Voice("espeak-en-us-nyc", "espeak", "en-us-nyc", 170, 50),
    Voice("espeak-en-us+f3", "espeak", "en-us+f3", 175, 70),
    Voice("espeak-en-gb+f2", "espeak", "en-gb+f2", 160, 60),
    Voice("espeak-en-us+m3", "espeak", "en-us+m3", 170, 55),
)
"""The default piper voice (the only piper voice a package carries) and eleven espeak-ng voices:
American, British, Scottish, RP, Lancaster, West Midlands, Caribbean, New York; two female."""

RATES: dict[str, float] = {"normal": 1.0, "slow": 0.8}
"""Speaking rate against the voice's own: espeak-ng's words per minute times this, piper's
``length_scale`` divided by it. Slow speech leaves longer gaps between words."""

CONDITIONS: tuple[Condition, ...] = (
    Condition("clean"),
    Condition("pink", 20.0),
    Condition("babble", 10.0),
    Condition("hum", 20.0),
    Condition("clean"),
    Condition("pink", 10.0),
    Condition("babble", 20.0),
    Condition("hum", 10.0),
)
"""The slots of the noise design, taken in turn: clean twice, so that clean, pink, babble and hum
each get a quarter of the items, and the two SNRs (alternating) half of the noisy ones each."""

PAUSES_MS: tuple[float, ...] = (400.0, 550.0, 700.0)
"""Pauses asked of the synthesizer in ``PAUSED`` utterances, in turn."""


def assign(
    utterances: Sequence[Utterance],
    voices: Sequence[str],
    rates: Sequence[str],
    conditions: Sequence[Condition],
    variants: int = 1,
    pauses_ms: Sequence[float] = PAUSES_MS,
) -> list[Assignment]:
    """The balanced design: ``variants`` takes of each utterance, variant 0 of all first.

    The plain utterances are counted apart from the paused ones, the paused ones going on where
    the plain ones stop, so that both groups, and the whole, are balanced. In pass ``k``, the
    ``n``-th utterance of its group gets the condition slot ``(n + 3k) % len(conditions)`` (a
    Latin-square shift: an utterance's variants never share a slot), the rate
    ``(n + n // len(conditions) + k) % len(rates)`` (both rates in every slot, as the blocks go),
    and, among the voices used least so far in the pass and not yet by this utterance, the one
    least used with that noise kind, then with that rate (ties: the voices' order).
    """
    out: list[Assignment] = []
    taken: dict[int, set[int]] = {}
    n_slots = len(conditions)
    paused_seen = 0
    start = {False: 0, True: sum(not u.paused for u in utterances)}
    for variant in range(variants):
        count: Counter[tuple[str, object]] = Counter()
        seen = dict(start)
        for j, utterance in enumerate(utterances):
            n = seen[utterance.paused]
            seen[utterance.paused] += 1
            slot = (n + 3 * variant) % n_slots
            condition = conditions[slot]
            rate = (n + n // n_slots + variant) % len(rates)
            mine = taken.setdefault(j, set())
            free = [v for v in range(len(voices)) if v not in mine] or list(range(len(voices)))
            least = min(count["v", v] for v in free)

            noise = condition.noise
            # among the least used voices: the one least used with this noise, then with this rate
            ranked = [
                (count["vn", (v, noise)], count["vr", (v, rate)], v) for v in free if count["v", v] <= least
            ]
            voice = min(ranked)[2]
            for key in (("v", voice), ("vn", (voice, condition.noise)), ("vr", (voice, rate))):
                count[key] += 1
            mine.add(voice)
            pause = None
            if utterance.paused:
                pause = pauses_ms[paused_seen % len(pauses_ms)]
                paused_seen += 1
            out.append(Assignment(j, variant, voices[voice], rates[rate], condition, pause))
    return out
