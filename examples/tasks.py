"""Synthetic tasks for the four RNN types, generated from a seed (no downloads).

They are small and artificial on purpose: each is defined here in full, so what a model
learned can be checked exactly. None of them is real language.

* :func:`sentiment_data` — many-to-one. Sentences of 4–20 words from a 43-word vocabulary;
  the label is the sign of a sum of word polarities, where "very" doubles the next polarity
  word and "not"/"never" flip it ("not very good" = −2). Optionally five "ratings" by the
  size of the sum. Counting with negation scope, not reading.
* :func:`name_tagging_data` — many-to-many, same length. Template sentences with person
  names (tag 1) among ordinary words (tag 0). Eight first names (Rose, Will, Mark, Grace,
  Hope, Jack, Teddy, Bill) also start sentences as ordinary words ("Teddy bears sat on the
  shelf"); only the *next* word tells which, so a forward-only tagger must guess there.
  Held-out sentences use first/last-name pairs never seen together in training.
* :func:`date_pairs` — encoder–decoder. Dates written in five human formats
  ("25th of March 2024", "March 25, 2024", "25 March 2024", "Mar 25 2024", "25/03/2024")
  → ISO "2024-03-25", character by character; train and held-out sets hold different dates.
* :func:`pattern_data` — one-to-many. Six "melodic" patterns over 12 pitch classes (a–l):
  rising or falling steps, a major arpeggio, a trill, a repeated note, rising fifths; a
  class id asks for a pattern, the start note and length (4–8) are free. Some (start,
  length) combinations of every class are held out of training.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numpy as np

# --- many-to-one: sentiment-style classification ---------------------------------------------------
POSITIVE = ["good", "great", "excellent", "wonderful", "enjoyable", "brilliant", "lovely", "superb"]
NEGATIVE = ["bad", "terrible", "awful", "boring", "dull", "poor", "horrible", "weak"]
FILLER = ["the", "movie", "film", "plot", "acting", "was", "is", "and", "but", "story", "actors", "quite",
          "music", "ending", "a", "it", "this", "script", "scenes", "cast", "felt", "seemed", "director",
          "overall"]
NEGATORS = ["not", "never"]
INTENSIFIER = "very"


def sentiment_sentence(rng: np.random.Generator) -> tuple[list[str], int]:
    """One sentence and its polarity score (sum over polarity words, with "very" ×2 and negation ×−1)."""
    words, score = [], 0
    length = int(rng.integers(4, 21))
    while len(words) < length:
        if rng.random() < 0.45:
            words.append(str(rng.choice(FILLER)))
            continue
        sign = 1 if rng.random() < 0.5 else -1
        weight = 1
        if rng.random() < 0.25:
            words.append(str(rng.choice(NEGATORS)))
            weight = -weight
        if rng.random() < 0.25:
            words.append(INTENSIFIER)
            weight *= 2
        words.append(str(rng.choice(POSITIVE if sign > 0 else NEGATIVE)))
        score += sign * weight
    return words, score


def rating(score: int) -> int:
    """Five ratings 0–4 by score: ≤ −3, −2…−1, 0, 1…2, ≥ 3."""
    return int(np.digitize(score, [-2.5, -0.5, 0.5, 2.5]))


def sentiment_data(n: int, seed: int, ratings: bool = False) -> tuple[list[list[str]], np.ndarray]:
    """n sentences and labels: 0/1 (negative/positive; sentences scoring 0 are redrawn) or ratings 0–4."""
    rng = np.random.default_rng(seed)
    sentences, labels = [], []
    while len(sentences) < n:
        words, score = sentiment_sentence(rng)
        if not ratings and score == 0:
            continue
        sentences.append(words)
        labels.append(rating(score) if ratings else int(score > 0))
    return sentences, np.array(labels)


# --- many-to-many: name tagging --------------------------------------------------------------------
AMBIGUOUS_FIRST = ["Rose", "Will", "Mark", "Grace", "Hope", "Jack", "Teddy", "Bill"]
OTHER_FIRST = ["Harry", "Hermione", "Ron", "Albus", "Minerva", "Luna", "Neville", "Ginny"]
LAST = ["Potter", "Granger", "Weasley", "Dumbledore", "Lovegood", "Longbottom", "Roosevelt", "Turner",
        "Davis", "Smith", "Brown", "Taylor"]
# An ambiguous first word used as an ordinary word, and what may follow it.
COMMON_OPENINGS = {
    "Rose": [["petals", "fell", "on", "the", "path"], ["bushes", "grew", "by", "the", "wall"]],
    "Will": [["you", "come", "to", "the", "party"], ["they", "invent", "a", "new", "spell"]],
    "Mark": [["the", "date", "on", "the", "calendar"], ["every", "answer", "in", "red"]],
    "Grace": [["is", "a", "rare", "virtue"], ["and", "patience", "matter", "a", "lot"]],
    "Hope": [["remained", "in", "the", "village"], ["is", "not", "a", "plan"]],
    "Jack": [["the", "car", "up", "slowly"], ["rabbits", "ran", "across", "the", "field"]],
    "Teddy": [["bears", "sat", "on", "the", "shelf"], ["bears", "were", "sold", "out"]],
    "Bill": [["the", "customer", "today"], ["payments", "are", "due", "soon"]],
}
VERBS = ["invented", "found", "met", "visited", "thanked", "taught", "saw", "helped"]
OBJECTS = [["a", "new", "spell"], ["the", "old", "castle"], ["a", "great", "president"], ["the", "library"],
           ["a", "secret", "door"], ["the", "village"]]
CONNECTORS = ["and", "with", "after", "before"]


def _name_pairs(held_out: bool) -> list[tuple[str, str]]:
    firsts = AMBIGUOUS_FIRST + OTHER_FIRST  # a quarter of the pairs, spread over every first and last name
    return [(f, last) for i, f in enumerate(firsts) for j, last in enumerate(LAST) if ((i + j) % 4 == 0) == held_out]


def name_sentence(rng: np.random.Generator, pairs: list[tuple[str, str]]) -> tuple[list[str], list[int]]:
    """One sentence and its tags (1 on every word of a person's name)."""
    words: list[str] = []
    tags: list[int] = []

    def add(tokens, tag):
        words.extend(tokens)
        tags.extend([tag] * len(tokens))

    def person():
        first, last = pairs[int(rng.integers(len(pairs)))]
        add([first, last], 1)

    if rng.random() < 0.4:  # an ambiguous first word used as an ordinary word
        opening = AMBIGUOUS_FIRST[int(rng.integers(len(AMBIGUOUS_FIRST)))]
        rest = COMMON_OPENINGS[opening][int(rng.integers(2))]
        add([opening] + rest, 0)
        if rng.random() < 0.5:
            add([str(rng.choice(CONNECTORS))], 0)
            person()
        return words, tags
    person()
    if rng.random() < 0.4:
        add(["and"], 0)
        person()
    add([str(rng.choice(VERBS))], 0)
    if rng.random() < 0.5:
        person()
    else:
        add(OBJECTS[int(rng.integers(len(OBJECTS)))], 0)
    if rng.random() < 0.3:
        add([str(rng.choice(CONNECTORS))], 0)
        person()
    return words, tags


def name_tagging_data(n: int, seed: int, held_out: bool = False) -> tuple[list[list[str]], list[list[int]]]:
    """n tagged sentences; ``held_out`` uses the first/last-name pairs training never sees."""
    rng = np.random.default_rng(seed)
    pairs = _name_pairs(held_out)
    data = [name_sentence(rng, pairs) for _ in range(n)]
    return [d[0] for d in data], [d[1] for d in data]


def name_spans(tags) -> set[tuple[int, int]]:
    """Maximal runs of tag 1 as (start, end) pairs."""
    spans, start = set(), None
    for i, tag in enumerate(list(tags) + [0]):
        if tag == 1 and start is None:
            start = i
        elif tag != 1 and start is not None:
            spans.add((start, i))
            start = None
    return spans


# --- encoder–decoder: date formats --------------------------------------------------------------------
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def human_date(date: _dt.date, style: int) -> str:
    """One of five human spellings of ``date``."""
    month = MONTHS[date.month - 1]
    return [
        f"{_ordinal(date.day)} of {month} {date.year}",
        f"{month} {date.day}, {date.year}",
        f"{date.day} {month} {date.year}",
        f"{month[:3]} {date.day} {date.year}",
        f"{date.day:02d}/{date.month:02d}/{date.year}",
    ][style]


NUM_DATE_STYLES = 5


def date_pairs(n_train: int, n_test: int, seed: int, first_year: int = 1950,
               last_year: int = 2049) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(human, ISO) pairs; train and test dates are disjoint, each in a random style."""
    rng = np.random.default_rng(seed)
    start = _dt.date(first_year, 1, 1).toordinal()
    days = _dt.date(last_year, 12, 31).toordinal() - start + 1
    chosen = rng.choice(days, size=n_train + n_test, replace=False)
    dates = [_dt.date.fromordinal(start + int(d)) for d in chosen]
    styles = rng.integers(0, NUM_DATE_STYLES, size=len(dates))
    pairs = [(human_date(d, int(s)), d.isoformat()) for d, s in zip(dates, styles)]
    return pairs[:n_train], pairs[n_train:]


# --- one-to-many: melodic patterns ----------------------------------------------------------------
NOTES = "abcdefghijkl"  # 12 pitch classes
PATTERNS = {  # class name → the cycle of intervals between consecutive notes
    "rising": [1],
    "falling": [-1],
    "arpeggio": [4, 3, 5],
    "trill": [1, -1],
    "repeat": [0],
    "fifths": [7],
}
PATTERN_NAMES = list(PATTERNS)
MIN_NOTES, MAX_NOTES = 4, 8


def pattern_sequence(kind: int, start: int, length: int) -> str:
    steps = PATTERNS[PATTERN_NAMES[kind]]
    notes, pitch = [NOTES[start]], start
    for i in range(length - 1):
        pitch = (pitch + steps[i % len(steps)]) % 12
        notes.append(NOTES[pitch])
    return "".join(notes)


def is_valid_pattern(kind: int, notes: str) -> bool:
    """Whether ``notes`` is an instance of pattern ``kind`` with a legal length."""
    if not MIN_NOTES <= len(notes) <= MAX_NOTES or any(n not in NOTES for n in notes):
        return False
    return notes == pattern_sequence(kind, NOTES.index(notes[0]), len(notes))


@dataclass
class PatternSplit:
    train: list[tuple[int, str]]  #: (class, notes), every (class, start, length) combination not held out
    held_out: list[tuple[int, str]]  #: the held-out combinations


def pattern_data(seed: int, held_out_fraction: float = 0.25) -> PatternSplit:
    """All 6 × 12 × 5 pattern instances, split at random into training and held-out combinations."""
    rng = np.random.default_rng(seed)
    items = [(k, pattern_sequence(k, s, n)) for k in range(len(PATTERNS)) for s in range(12)
             for n in range(MIN_NOTES, MAX_NOTES + 1)]
    order = rng.permutation(len(items))
    cut = int(round(held_out_fraction * len(items)))
    return PatternSplit([items[i] for i in order[cut:]], [items[i] for i in order[:cut]])
