"""The guard: a semantic match is served only if both prompts state the same hard facts.

Embeddings place "What is 2+2?" and "What is 2+3?" close together (cosine 0.89 with MiniLM) while
two honest paraphrases can sit far apart, so similarity alone cannot tell a paraphrase from a
changed number. The guard compares what a paraphrase keeps and a different question changes:
numbers (in digits or in words), quoted strings, code, URLs and e-mail addresses, names
(capitalised or mixed-case words past the start of a sentence, acronyms, words with digits),
negation, verbs that invert a question (avoid, exclude, stop, ...), relative time (today, latest,
this week, ...), which way a direction or comparison goes (`dollars to rupees` is not `rupee to
dollar`), words of a contrast group (today or tomorrow, a man or a woman, he or she), and what the
question asks for (how, why, when, where, who, or yes or no). Any difference vetoes the match; the
request goes upstream. Every rule reads from a table below, so each word can be tested alone.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

_CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
_QUOTED = re.compile(r'"([^"\n]{1,200})"|“([^”\n]{1,200})”|«([^»\n]{1,200})»|(?<![\w])\'([^\'\n]{2,200})\'(?![\w])')
_URL = re.compile(r"\b(?:https?://|www\.)\S+|\b[\w.+-]+@[\w-]+\.[\w.-]+\b", re.I)
_NUMBER = re.compile(r"(?<![\d.,])[-+]?\d[\d,_]*(?:\.\d+)?(?:[eE][-+]?\d+)?%?")
_OPERATOR = re.compile(r"(?<!\S)[a-z_]+:[^\s:]+", re.I)
"""Search operators (`site:example.com`, `after:2025-01-01`, `is:solved`): kept verbatim."""
_WORD = re.compile(r"[^\W_][\w'’\-]*", re.U)
_NEGATIONS = frozenset(
    {"not", "no", "never", "without", "none", "nor", "neither", "cannot", "nobody", "nothing", "nowhere"}
)
_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
        + ("thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
    )
} | {"hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000", "dozen": "12"}
_TENS = {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_NUMBER_WORDS |= {word: str(value) for word, value in _TENS.items()}
_NUMBER_WORDS |= {
    f"{tens}-{unit}": str(value + int(_NUMBER_WORDS[unit]))
    for tens, value in (("twenty", 20), *_TENS.items())
    for unit in ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
}
_NUMBER_WORDS |= {"half": "1/2", "quarter": "1/4", "twice": "2x", "thrice": "3x", "double": "2x", "triple": "3x"}
"""Quantities in words, as the digits (or fraction, or multiple) they stand for."""
_CONTRASTS = [
    {form: meaning.split("/")[0] for meaning in group.split() for form in meaning.split("/")}
    for group in (
        "today tomorrow yesterday tonight",
        "before after",
        "morning afternoon evening night",
        "daily weekly monthly yearly annual",
        "enable disable",
        "beginner/beginners intermediate advanced expert/experts",
        "light dark",
        "positive negative",
        "local remote",
        "min max minimum maximum",
        "increase decrease",
        "add remove delete",
        "upload download",
        "import export",
        "encrypt decrypt",
        "buy sell",
        "first last",
        "ascending descending",
        "oldest newest latest recent top",
        "cheapest nearest fastest best worst",
        "input output",
        "open close",
        "start stop",
        "north south east west",
        "inbound outbound",
        "public private",
        "synchronous asynchronous sync async",
        "man/men/guy/guys/male/males woman/women/lady/ladies/female/females",
        "boy/boys girl/girls",
        "husband/husbands wife/wives",
        "boyfriend/boyfriends girlfriend/girlfriends",
        "father/fathers/dad/dads mother/mothers/mom/moms/mum/mums",
        "son/sons daughter/daughters",
        "brother/brothers sister/sisters",
        "king/kings queen/queens",
        "he/him/his/himself she/her/hers/herself",
    )
]
"""Words that change the question when swapped for another of their group, each as the first of its
forms (`men` is `man`, and against `women` as `man` against `woman`)."""
_CONTRASTING = {form: (i, meaning) for i, group in enumerate(_CONTRASTS) for form, meaning in group.items()}
"""Each form of a `_CONTRASTS` group: (its group, its meaning)."""
_INVERTING = {
    form: root
    for root, forms in (
        ("avoid", "avoid avoids avoided avoiding"),
        ("exclude", "exclude excludes excluded excluding except"),
        ("stop", "stop stops stopped stopping quit quits quitting"),
        ("prevent", "prevent prevents prevented preventing"),
        ("disable", "disable disables disabled disabling"),
        ("remove", "remove removes removed removing uninstall uninstalls uninstalled uninstalling"),
        ("block", "block blocks blocked blocking"),
        ("skip", "skip skips skipped skipping"),
        ("ignore", "ignore ignores ignored ignoring"),
        ("cancel", "cancel cancels cancelled canceled cancelling canceling"),
        ("reduce", "reduce reduces reduced reducing lower lowers lowered lowering"),
        ("lack", "lack lacks lacked lacking"),
    )
    for form in forms.split()
}
"""Words that turn a question around (`how to avoid sugar` asks the opposite of `how to eat sugar`),
by the root two prompts must share: a prompt with one the other lacks is another question."""
_RELATIVE_TIME = {
    phrase: meaning
    for meaning, phrases in (
        ("now", "now|currently|nowadays|right now|these days|at the moment|at present"),
        ("today", "today"),
        ("tonight", "tonight"),
        ("this morning", "this morning"),
        ("this evening", "this evening"),
        ("yesterday", "yesterday|last night"),
        ("tomorrow", "tomorrow"),
        ("latest", "latest|up to date|up-to-date"),
        ("newest", "newest"),
        ("recent", "recent|recently|most recent"),
        ("this week", "this week|this weekend"),
        ("last week", "last week|past week"),
        ("next week", "next week"),
        ("this month", "this month"),
        ("last month", "last month|past month"),
        ("next month", "next month"),
        ("this year", "this year"),
        ("last year", "last year|past year"),
        ("next year", "next year"),
        ("upcoming", "upcoming|soon"),
    )
    for phrase in phrases.split("|")
}
"""Relative time, by what it means (words of one `_CONTRASTS` group mean different times): the
answer to `the latest iPhone` changes, that to `the iPhone` does not, so both prompts must say the
same (or none)."""
_DIRECTIONS = frozenset({"to", "into"})
"""Words whose nearest neighbours must not swap: `svn to git` is not `git to svn`."""
_COMPARISONS = frozenset({"than", "vs", "versus"})
"""Words whose two sides must not swap: `Python faster than Java` is not `Java faster than Python`."""
_ASKING = frozenset({"how", "why", "when", "where", "who"})
"""What a question asks for, by its first question word: `How does DNA split?` is not `Why does DNA
split?`. `what` and `which` ask for anything (`What is the reason ...` is a `why`), so a prompt whose
first question word is one of them asks for nothing in particular, and agrees with any."""
_YES_OR_NO = frozenset(
    ("is", "are", "was", "were", "am", "can", "could", "do", "does", "did", "will", "would", "should", "shall")
    + ("has", "have", "had", "may", "might", "must")
)
"""First words that make a yes-or-no question: `Can Islam be reformed?` is not `How can Islam be
reformed?`, nor `Will he join?` `When will he join?`."""
_STOPWORDS = frozenset(
    ("a", "an", "the", "is", "are", "was", "were", "be", "do", "does", "did", "i", "you", "we", "it", "this")
    + ("that", "of", "in", "on", "for", "with", "by", "at", "from", "and", "or", "how", "what", "which", "who")
    + ("why", "when", "where", "can", "could", "should", "would", "will", "my", "your", "our")
)


@dataclass(frozen=True, slots=True)
class Facts:
    numbers: Counter[str]
    operators: frozenset[str]
    quoted: frozenset[str]
    code: frozenset[str]
    links: frozenset[str]
    names: frozenset[str]
    """Lower-cased; compared against the other prompt's words, so `Python` matches `python`."""
    words: frozenset[str]
    negated: bool
    contrasts: frozenset[tuple[int, str]]
    """(group, meaning) for the words of `_CONTRASTS` groups, possessive or not (`women's` is `woman`)."""
    directions: frozenset[tuple[frozenset[str], frozenset[str]]]
    """Around each direction word: the run of content words before it, and the run after it (as `_lemma`s)."""
    inverted: frozenset[str]
    """The roots of `_INVERTING` words."""
    times: frozenset[str]
    """The meanings of `_RELATIVE_TIME` words and phrases."""
    sides: tuple[frozenset[str], frozenset[str]] | None
    """The content words (as `_lemma`s) before and after the first comparison word, if there is one."""
    asks: str | None = None
    """The first question word, if it is one of `_ASKING`, or "yes or no" (`_YES_OR_NO`)."""


_UNSEEN = frozenset({"Cc", "Cf"})
"""The character categories a tokenizer drops (BERT's: control and format characters)."""


def visible(text: str) -> str:
    """`text` as the embedding model and a reader see it: without format characters (a zero-width space,
    a word joiner) and control characters, which they drop, so `n<zero-width space>ot` is `not` here
    too (whitespace stays as it is). A printable text (nearly all) is returned as it is."""
    if text.isprintable():
        return text
    return "".join(char for char in text if char.isspace() or unicodedata.category(char) not in _UNSEEN)


def facts(text: str) -> Facts:
    """The hard facts a prompt states (see the module docstring)."""
    text = visible(unicodedata.normalize("NFKC", text))
    code = frozenset(" ".join(block.strip("`").split()) for block in _CODE.findall(text))
    text = _CODE.sub(" ", text)
    links = frozenset(link.rstrip(".,;:!?)").lower() for link in _URL.findall(text))
    text = _URL.sub(" ", text)
    quoted = frozenset(" ".join(next(g for g in groups if g).lower().split()) for groups in _QUOTED.findall(text))
    operators = frozenset(op.lower() for op in _OPERATOR.findall(text))
    text = _OPERATOR.sub(" ", text)
    numbers = Counter(_number(n) for n in _NUMBER.findall(text))
    names = set()
    words = set()
    sequence: list[str] = []
    negated = False
    for match in _WORD.finditer(text):
        word = match.group()
        lower = word.lower()
        words.add(lower)
        sequence.append(lower)
        if lower in _NEGATIONS or lower.endswith(("n't", "n’t")):
            negated = not negated
        if lower in _NUMBER_WORDS:
            numbers[_NUMBER_WORDS[lower]] += 1
        elif _is_name(word, text, match.start()):
            names.add(lower)
    contrasts = frozenset(_CONTRASTING[w] for w in map(_bare, words) if w in _CONTRASTING)
    content = [(i, w) for i, w in enumerate(sequence) if w not in _STOPWORDS and w not in _DIRECTIONS]
    directions = set()
    for i, word in enumerate(sequence):
        if word in _DIRECTIONS:
            before, after = _run(sequence, i, -1), _run(sequence, i, 1)
            if before and after:
                directions.add((before, after))
    inverted = frozenset(_INVERTING[w] for w in words if w in _INVERTING)
    pairs = [f"{a} {b}" for a, b in zip(sequence, sequence[1:], strict=False)]
    triples = [f"{a} {b} {c}" for a, b, c in zip(sequence, sequence[1:], sequence[2:], strict=False)]
    times = frozenset(_RELATIVE_TIME[p] for p in (*words, *pairs, *triples) if p in _RELATIVE_TIME)
    pivot = next((i for i, word in enumerate(sequence) if word in _COMPARISONS), None)
    sides = None
    if pivot is not None:
        sides = (
            frozenset(_lemma(w) for j, w in content if j < pivot),
            frozenset(_lemma(w) for j, w in content if j > pivot),
        )
    asked = next((word for word in sequence if word in _ASKING or word in ("what", "which")), None)
    if sequence and sequence[0] in _YES_OR_NO:
        asked = "yes or no"
    return Facts(
        numbers,
        operators,
        quoted,
        code,
        links,
        frozenset(names),
        frozenset(words),
        negated,
        contrasts,
        frozenset(directions),
        inverted,
        times,
        sides,
        asked if asked in _ASKING or asked == "yes or no" else None,
    )


def agrees(a: str, b: str) -> bool:
    """True when prompts `a` and `b` state the same hard facts."""
    if a == b:
        return True
    x, y = facts(a), facts(b)
    return (
        x.numbers == y.numbers
        and x.operators == y.operators
        and x.quoted == y.quoted
        and x.code == y.code
        and x.links == y.links
        and x.negated == y.negated
        and x.names <= y.words
        and y.names <= x.words
        and _same_contrasts(x, y)
        and x.inverted == y.inverted
        and x.times == y.times
        and not any(_swapped(a, b) for a in x.directions for b in y.directions)
        and not _swapped(x.sides, y.sides)
        and not _prefixed_opposites(x.words, y.words)
        and (x.asks is None or y.asks is None or x.asks == y.asks)
    )


def _swapped(x: tuple[frozenset[str], frozenset[str]] | None, y: tuple[frozenset[str], frozenset[str]] | None) -> bool:
    """Words crossing a comparison word both ways: what came before it in one comes after it in the other."""
    if x is None or y is None:
        return False
    return bool(x[0] & y[1]) and bool(x[1] & y[0])


def _run(sequence: list[str], at: int, step: int) -> frozenset[str]:
    """The content words next to `sequence[at]` going `step`-wise: stopwords right next to it are
    skipped, then the run lasts until the next stopword or direction word (`New York` in `from New
    York to Boston`), each word as its `_lemma`."""
    i = at + step
    while 0 <= i < len(sequence) and sequence[i] in _STOPWORDS:
        i += step
    run = set()
    while 0 <= i < len(sequence) and sequence[i] not in _STOPWORDS and sequence[i] not in _DIRECTIONS:
        run.add(_lemma(sequence[i]))
        i += step
    return frozenset(run)


def _same_contrasts(x: Facts, y: Facts) -> bool:
    """No contrast group in which one prompt says one word and the other another."""
    groups = {group for group, _ in x.contrasts} & {group for group, _ in y.contrasts}
    return all(
        {w for g, w in x.contrasts if g == group} == {w for g, w in y.contrasts if g == group} for group in groups
    )


def _prefixed_opposites(a: frozenset[str], b: frozenset[str]) -> bool:
    """`solved` against `unsolved`, `like` against `dislike`, ...: one says the opposite of the other."""
    for x, y in ((a, b), (b, a)):
        for word in x - y:
            for prefix in ("un", "dis", "in", "non", "non-", "im", "ir", "il"):
                if word.startswith(prefix) and word[len(prefix) :] in y - x:
                    return True
    return False


def _lemma(word: str) -> str:
    """A crude singular, enough for two prompts to name one thing alike: `dollars` and `dollar`,
    `cities` and `city`. Both prompts are read the same way, so a wrong cut (`news`, `new`) is harmless."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _bare(word: str) -> str:
    """A word without its possessive ending: `women's` is `women`, `guys'` is `guys`."""
    return word.removesuffix("'s").removesuffix("’s").rstrip("'’")


def _number(raw: str) -> str:
    percent = raw.endswith("%")
    value = raw.rstrip("%").replace(",", "").replace("_", "").lstrip("+")
    if "." in value and "e" not in value.lower():
        value = value.rstrip("0").rstrip(".") or "0"
    return value + ("%" if percent else "")


def _is_name(word: str, text: str, start: int) -> bool:
    """A proper name, acronym or identifier: `Paris`, `USA`, `iPhone`, `gpt4`, not a sentence's first word."""
    if any(ch.isdigit() for ch in word):
        return not word.isdigit()
    if word == "I":
        return False
    if word.isupper() and len(word) > 1:
        return True
    if any(ch.isupper() for ch in word[1:]):
        return True  # iPhone, JavaScript, McDonald
    if word[0].isupper():
        i = start - 1
        while i >= 0 and text[i].isspace():
            i -= 1
        return i >= 0 and text[i] not in ".!?:;\n"  # capitalised mid-sentence
    return False
