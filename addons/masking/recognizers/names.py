"""Person names found by given- and family-name lists from many cultures, beside spaCy's NER.

``en_core_web_sm`` knows English names: it labels many others ORG or GPE, or misses them. The lists
are Faker's for every locale it writes in Latin script (Europe, the Americas, Turkey, India, Africa,
Indonesia, ...), read from the installed package when a worker starts: nothing is fetched.

``NameListRecognizer`` reports runs of capitalised words that read as a name:
- two or more name words (``name_words``) opening with a listed given name, or with two listed names
  ("Giulia Bianchi", "Kowalski Jan", "Maria van der Berg");
- single listed names that are no common English word, two or more side by side in a list ("Rohit or
  Santosh", "Chauhan,Vishal"), or one addressed at the start of a sentence ("Rommel, the report ...").
A pair spaCy labels a place, event or product ("Costa Rica") is left alone. Score 0.7 for two listed
words, 0.6 otherwise (spaCy's PERSON is 0.85). A lone name outside a list needs person context
(``person_context.py``) or spaCy; ``PlausibleSpacyRecognizer`` drops spaCy's PERSONs that are tools,
places and sentence-opening verbs.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from functools import cache

from presidio_analyzer import LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import SpacyRecognizer

from addons.masking.recognizers.english import english_words, is_english
from addons.masking.recognizers.places import is_place, known_places
from addons.masking.recognizers.result import finding

# A word: letters with inner apostrophes or hyphens ("O'Brien", "Jean-Luc", "al-Hassan").
WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
# Lower-case words inside a name ("Ludwig van Beethoven", "João dos Santos", "Anwar bin Ibrahim").
PARTICLES = frozenset({"van", "von", "der", "den", "de", "del", "della", "di", "da", "das", "dos", "du", "la", "le",
                       "ten", "ter", "bin", "binti", "ibn", "al", "el", "y", "zu", "af", "av"})
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n\s*|[\"'(\[]\s*)$")
# An article before capitalised words makes them a thing or a place ("the Mona Lisa", "a Raspberry Pi").
_ARTICLE = re.compile(r"(?:^|(?<=\W))(?:the|a|an)\s+$", re.IGNORECASE)


def after_article(text: str, start: int) -> bool:
    """Whether an article stands right before ``start`` ("the Sagrada Família")."""
    return _ARTICLE.search(text, max(0, start - 5), start) is not None


def _latin(name: str) -> bool:
    return all(c.isalpha() or c in " '’-" for c in name) and all(ord(c) < 0x250 for c in name)


@cache
def _faker_lists() -> tuple[frozenset[str], frozenset[str]]:
    import faker.providers.person as person

    given: set[str] = set()
    family: set[str] = set()
    for module in pkgutil.iter_modules(person.__path__):
        provider = importlib.import_module(f"{person.__name__}.{module.name}").Provider
        for attribute in dir(provider):
            # first_names, first_names_female, first_romanized_names, middle_names, unisex_last_names,
            # last_names_without_suffix, ...: a locale's full list is not always under one attribute
            kind = _NAME_LIST.fullmatch(attribute)
            names = getattr(provider, attribute) if kind else None  # some are computed (a property on the class)
            if kind and isinstance(names, tuple | list | dict):
                into = family if kind.group(1) == "last" else given
                for name in names:
                    if isinstance(name, str) and _latin(name):
                        into.update(w for w in WORD.findall(name) if w[0].isupper())
    return frozenset(given), frozenset(family)


_NAME_LIST = re.compile(r"(?:\w+_)?(first|middle|last)_(?:\w+_)?names(?:_\w+)?")


def given_names() -> frozenset[str]:
    """Given names of every Latin-script Faker locale, each word of a compound name on its own."""
    return _faker_lists()[0]


def family_names() -> frozenset[str]:
    """Family names of every Latin-script Faker locale, each word of a compound name on its own."""
    return _faker_lists()[1]


@cache
def common_words() -> frozenset[str]:
    """Lower-cased English words a capitalised name-list entry is more likely to be ("Will", "May", "Grace")."""
    from faker.providers.lorem.en_US import Provider as Lorem
    from spacy.lang.en.stop_words import STOP_WORDS

    calendar = {"january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
                "november", "december", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
    return frozenset(Lorem.word_list) | frozenset(STOP_WORDS) | calendar | _NOT_NAMES | TITLES


# Capitalised words that follow or stand for a person without being a name.
_NOT_NAMES = frozenset({"dear", "hi", "hello", "hey", "team", "all", "everyone", "sir", "madam", "customer", "client",
                        "street", "avenue", "road", "university", "college", "school", "hospital", "inc", "ltd",
                        "corp", "company", "group", "bank", "city", "county", "state", "river", "lake", "mount",
                        "north", "south", "east", "west", "new", "san", "santa", "saint", "st", "port", "fort",
                        "cape", "island", "valley", "bay", "beach", "park", "station", "line", "airport", "museum",
                        "hotel", "church", "cathedral", "palace", "castle", "bridge", "tower", "square", "center",
                        "centre", "services", "cloud", "studio", "code", "notebook", "app", "api", "pro", "max",
                        "mini", "plus", "edition", "version", "model", "series", "framework", "language"})
# Titles before a name: part of no name, yet no sign that the words beside them name nobody.
TITLES = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "herr", "frau", "sr", "sra", "mme", "mlle", "dhr",
                    "mevr", "pan", "pani", "signor", "signora", "sig", "shri", "smt"})


def name_words(text: str, start: int, limit: int = 4) -> list[re.Match[str]]:
    """Up to ``limit`` capitalised words from ``start`` on, separated by single spaces, with lower-case
    particles between them ("Maria van der Berg"); empty if the word at ``start`` is not capitalised."""
    words: list[re.Match[str]] = []
    pending: list[re.Match[str]] = []  # particles, kept only if a capitalised word follows
    pos = start
    while len(words) < limit:
        match = WORD.match(text, pos)
        if match is None:
            break
        word = match.group()
        if word[0].isupper() and word.lower() not in _NOT_NAMES and word.lower() not in TITLES:
            words += pending + [match]
            pending = []
        elif words and word in PARTICLES and len(pending) < 2:
            pending.append(match)
        else:
            break
        gap = re.match(r"[ \t]", text[match.end():match.end() + 1])
        if gap is None:
            break
        pos = match.end() + 1
    return words


class NameListRecognizer(LocalRecognizer):
    """PERSON: capitalised words the given- and family-name lists read as a name."""

    PAIR_SCORE = 0.7
    SCORE = 0.6

    def __init__(self, supported_language: str = "en") -> None:
        super().__init__(supported_entities=["PERSON"], supported_language=supported_language,
                         name="NameListRecognizer")

    def load(self) -> None:
        given_names(), family_names(), common_words(), known_places(), english_words()

    def analyze(self, text: str, entities: list[str],
                nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
        given, family, common = given_names(), family_names(), common_words()
        results, lone = [], []
        pos = 0
        for match in WORD.finditer(text):
            if match.start() < pos or not match.group()[0].isupper():
                continue
            run = [w for w in name_words(text, match.start()) if w.group()[0].isupper()]
            while len(run) > 1 and _unlisted_word(run[0].group(), given, family, common):
                run = run[1:]  # a sentence's first word before a name ("And Maria Garcia") is not part of it
            if not run:
                continue
            first, listed = run[0].group(), sum(w.group() in given or w.group() in family for w in run)
            pair = len(run) >= 2 and (first in given and first.lower() not in common or listed >= 2)
            # a run opened by another capitalised word ("Yesterday Danek") is tried again from its second word
            pos = run[-1].end() if pair or len(run) == 1 or first in given or first in family else run[0].end()
            if pair and not _labelled_otherwise(nlp_artifacts, run[0].start(), run[-1].end()) \
                    and not is_place(text[run[0].start():run[-1].end()]) and not after_article(text, run[0].start()):
                score = self.PAIR_SCORE if listed >= 2 else self.SCORE
                results.append(finding(self, "PERSON", run[0].start(), run[-1].end(), score, "listed name"))
            elif len(run) == 1 and listed and first.lower() not in common:
                lone.append(match)
        for match in _listed_together(text, lone) | _addressed(text, lone, given):
            results.append(finding(self, "PERSON", match.start(), match.end(), self.SCORE, "listed name"))
        return results


def _unlisted_word(word: str, given: frozenset[str], family: frozenset[str], common: frozenset[str]) -> bool:
    return word.lower() in common and word not in given and word not in family


# spaCy labels that make a capitalised pair a place, an event or a thing ("Costa Rica", "French Revolution").
_NOT_PERSON_LABELS = frozenset({"GPE", "LOC", "FAC", "EVENT", "PRODUCT", "WORK_OF_ART", "LAW", "LANGUAGE", "NORP"})


def _labelled_otherwise(nlp_artifacts: NlpArtifacts | None, start: int, end: int) -> bool:
    doc = nlp_artifacts.tokens if nlp_artifacts is not None else None
    return doc is not None and any(e.label_ in _NOT_PERSON_LABELS and e.start_char <= start and end <= e.end_char
                                   for e in doc.ents)


# Between the names of a list ("Rohit or Santosh", "Maricel, Arnel and Jessa", "Chauhan,Vishal").
LIST_JOINT = re.compile(r"[ \t]*,[ \t]*(?:(?:and|or)[ \t]+)?|[ \t]+(?:and|or|&|und|et|y|e|i|og|och|ve|en)[ \t]+")
# A comma and the lower-case word after it: a name opening a sentence so is addressed, or written about.
_AFTER_COMMA = re.compile(r",[ \t]+([a-z]+)")
# Words that open an aside about the word before the comma, not an address to it ("Postgres, unlike MySQL, ...").
_ASIDE_OPENERS = frozenset({
    "after", "although", "as", "at", "because", "before", "being", "besides", "by", "despite", "especially",
    "even", "except", "for", "from", "however", "if", "in", "including", "instead", "like", "meanwhile", "moreover",
    "much", "namely", "nevertheless", "notably", "of", "on", "once", "originally", "since", "such", "though",
    "thus", "to", "too", "unless", "unlike", "until", "when", "whenever", "where", "whereas", "which", "while",
    "who", "whose", "with", "within", "without", "also", "therefore", "formerly",
})
# Words that start a new clause after a second comma; any other lower-case word there is the verb an aside's
# subject waits for ("Kubernetes, the container orchestrator, schedules pods").
_NEW_CLAUSE = frozenset({
    "and", "or", "but", "so", "then", "the", "a", "an", "this", "that", "these", "those", "it", "its", "i", "we",
    "they", "he", "she", "you", "my", "our", "their", "his", "her", "your", "there", "please", "thanks",
})
_SECOND_PERSON = re.compile(r"\b(?:you|your|yours|yourself|yourselves)\b", re.IGNORECASE)
_ASKING = re.compile(r"\b(?:please|thanks|thank)\b", re.IGNORECASE)
# A verb telling of the subject, not asking of the one addressed ("schedules", "is", "can"; not "send").
_STATEMENT_VERB = re.compile(r"[a-z]*[^s]s|is|was|has|had|does|did|can|could|will|would|should|may|might|must")


def spoken_to(text: str, end: int) -> bool:
    """Whether the comma after a sentence's first word (ending at ``end``) addresses it ("Lembo, the report is
    late") rather than opening an aside about it: one a conjunction, preposition or connective opens ("Postgres,
    unlike MySQL, ...", "Pydantic, however, ...") or a second comma closes before the subject's verb
    ("Kubernetes, the container orchestrator, schedules ..."). With an aside, the word is addressed only when the
    sentence asks or thanks ("Eshetu, when will it be ready?", "please"), when an unclosed aside speaks to
    someone ("Lembo, if you can send it"), or when what follows the aside is no statement ("Tesfaye, when you
    can, send it")."""
    opened = _AFTER_COMMA.match(text, end)
    if opened is None:
        return False
    stops = [i for i in (text.find(c, end) for c in ".!?\n") if i >= 0]
    rest = text[end:min(stops, default=len(text)) + 1]  # to the sentence's end, its "?" included
    closed = next((m for m in _AFTER_COMMA.finditer(rest, 1) if m.group(1) not in _NEW_CLAUSE), None)
    if opened.group(1) not in _ASIDE_OPENERS and closed is None:
        return True
    if rest.endswith("?") or _ASKING.search(rest):
        return True
    if closed is None:
        return _SECOND_PERSON.search(rest) is not None
    return not _STATEMENT_VERB.fullmatch(closed.group(1))


def _listed_together(text: str, lone: list[re.Match[str]]) -> set[re.Match[str]]:
    """Lone listed names next to another in a list: one listed word could be a place or a thing, two
    side by side are people."""
    found: set[re.Match[str]] = set()
    for a, b in zip(lone, lone[1:], strict=False):
        if LIST_JOINT.fullmatch(text, a.end(), b.start()):
            found.update((a, b))
    return found


def _addressed(text: str, lone: list[re.Match[str]], given: frozenset[str]) -> set[re.Match[str]]:
    """A given name opening a sentence and followed by a comma: someone addressed ("Rommel, the report..."), not
    written about ("Julia, unlike Python, ...": ``spoken_to``)."""
    return {m for m in lone if m.group() in given and _SENTENCE_START.search(text[:m.start()])
            and spoken_to(text, m.end())}


class PlausibleSpacyRecognizer(SpacyRecognizer):
    """Presidio's spaCy recognizer without the PERSONs the small model gets wrong: sentence-opening verbs
    ("Convert 72 degrees"), tools and places ("Jenkins", "Raspberry Pi", "Home Assistant"). Filtered here,
    before Presidio drops the other recognizers' findings that such a span contains."""

    def analyze(self, text: str, entities: list[str],
                nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
        return [r for r in super().analyze(text, entities, nlp_artifacts)
                if r.entity_type != "PERSON" or not unlikely_person(text, r.start, r.end)]


def unlikely_person(text: str, start: int, end: int) -> bool:
    """A spaCy PERSON that is a place ("Buenos Aires") or follows an article ("a Raspberry Pi"); one none of
    whose words is a listed name, when it is one word or holds an English word ("Configure Grafana"); a
    one-word PERSON opening a sentence that is no listed given name."""
    if re.match(r"(?:an?|the)\s", text[start:end], re.IGNORECASE) or after_article(text, start):
        return True
    if is_place(re.sub(r"['’]s$", "", text[start:end])):
        return True
    words = [w for w in text[start:end].split() if w.rstrip(".").lower() not in TITLES]
    if len(words) == 1 and words[0].isalpha() and _SENTENCE_START.search(text[:start]):
        return words[0] not in given_names()
    if any(w in given_names() or w in family_names() for w in words):
        return False
    return len(words) <= 1 or any(w.lower() in common_words() or is_english(w.strip(".,'’")) for w in words)
