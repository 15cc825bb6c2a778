"""Person names no list knows, found by their shape: capitalised words that are no English word and no place.

Name lists miss most names of most cultures ("Eshetu", "Kumsal", "Dongmo"), and the small English model
labels many of them ORG, FAC or nothing. What such a name is not, though, can be checked: it is no English
word (``english_words``: the English lemmatizer's word lists shipped in the installed spaCy model, about
88,000 lemmas, with their inflections undone by suffix), no place (``places.py``), no acronym ("IRA"), no
CamelCase identifier ("MongoDB") and has no digit. ``NameShapeRecognizer`` reports such words where names
stand:
- two to four of them side by side ("Bekele Eshetu", "Floria Cortes"), or a listed given or family name
  beside them, as long as spaCy does not call the whole a place, a language or an event;
- two or more single ones in a list ("Tesfaye or Eshetu", "Rosinda, Ludgero and Urânia", "Carine,Kamdem"), if
  one of them is a listed name or the sentence is about people ("who", "assign", "colleagues", "her");
- one opening a sentence and addressed ("Lembo, the report is late"), not written about in an aside
  ("Postgres, unlike MySQL, ...", "Kubernetes, the container orchestrator, schedules ...").
Product and tool names that are no English word ("Grafana and Kubernetes") read as names too: they are
left alone where spaCy labels them a product or an organisation in a list of single words, or by the list
and address rules above; a tool in a list with a listed name, in a sentence about people, or addressed
("Pulumi, for example, lets you ...") is still masked, which is why the score (0.55) is the lowest of the
PERSON recognizers.
"""

from __future__ import annotations

import re

from presidio_analyzer import LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from addons.masking.recognizers.english import english_words, is_english
from addons.masking.recognizers.names import (
    _SENTENCE_START,
    LIST_JOINT,
    PARTICLES,
    TITLES,
    WORD,
    after_article,
    common_words,
    family_names,
    given_names,
    spoken_to,
)
from addons.masking.recognizers.places import is_place, known_places
from addons.masking.recognizers.result import finding


def _shaped(word: str) -> bool:
    """Capitalised like a name: an upper-case letter, then lower-case ones (hyphen and apostrophe parts too)."""
    return word[0].isupper() and len(word) > 1 and not any(c.isupper() for c in word[1:] if c.isalpha()
                                                           and not _after_joint(word, c))


def _after_joint(word: str, letter: str) -> bool:
    i = word.index(letter)
    return i > 0 and word[i - 1] in "-'’"


def unfamiliar(word: str) -> bool:
    """A word shaped like a name that is no English word ("Eshetu", "Kumsal", "Öner")."""
    return _shaped(word) and word.lower() not in TITLES and word.lower() not in common_words() and not is_english(word)


def _name_word(word: str) -> bool:
    """An unfamiliar word, or a listed name that is no common word ("Maria", "Cortes")."""
    return unfamiliar(word) or (_shaped(word) and (word in given_names() or word in family_names())
                                and word.lower() not in common_words())


def _listed_name(word: str) -> bool:
    """A given or family name of the lists ("Leopold", "Ramesh")."""
    return word in given_names() or word in family_names()


# spaCy labels that make capitalised words a place, a language, an event or a work, not a person.
_NOT_PERSON = frozenset({"GPE", "LOC", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE", "NORP"})
# ... and, for a list of single words, a product or an organisation ("Grafana and Kubernetes").
_NOT_PERSON_IN_LISTS = _NOT_PERSON | {"ORG", "PRODUCT", "FAC"}


class NameShapeRecognizer(LocalRecognizer):
    """PERSON: runs and lists of capitalised words that are neither English words nor places."""

    SCORE = 0.55

    def __init__(self, supported_language: str = "en") -> None:
        super().__init__(supported_entities=["PERSON"], supported_language=supported_language,
                         name="NameShapeRecognizer")

    def load(self) -> None:
        english_words(), known_places(), given_names(), family_names()

    def analyze(self, text: str, entities: list[str],
                nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
        spans: list[tuple[int, int]] = []
        singles: list[re.Match[str]] = []
        pos = 0
        for match in WORD.finditer(text):
            if match.start() < pos or not match.group()[0].isupper():
                continue
            run = _run(text, match.start())
            while run and not _name_word(run[0].group()):
                run = run[1:]  # "Summarise", "Interview": English words before a name are no part of it
            while run and not _name_word(run[-1].group()):
                run = run[:-1]
            if not run:
                continue
            pos = run[-1].end()
            if after_article(text, run[0].start()):
                continue
            words = [w.group() for w in run if w.group() not in PARTICLES]
            if len(words) >= 2 and all(_name_word(w) for w in words) and any(unfamiliar(w) for w in words):
                start, end = run[0].start(), run[-1].end()
                if not is_place(text[start:end]) and not _labelled(nlp_artifacts, start, end, _NOT_PERSON):
                    spans.append((start, end))
            elif len(words) == 1 and _name_word(words[0]) and not is_place(words[0]):
                singles.append(run[0])
        spans += _listed(text, singles, nlp_artifacts) + _addressed(text, singles)
        return [finding(self, "PERSON", start, end, self.SCORE, "unfamiliar name") for start, end in spans]


def _run(text: str, start: int) -> list[re.Match[str]]:
    """Up to four capitalised words from ``start`` on, single-spaced, particles between them kept."""
    words: list[re.Match[str]] = []
    pos = start
    while len(words) < 6:
        match = WORD.match(text, pos)
        if match is None or not (match.group()[0].isupper() or (words and match.group() in PARTICLES)):
            break
        words.append(match)
        if text[match.end():match.end() + 1] not in (" ", "\t"):
            break
        pos = match.end() + 1
    while words and words[-1].group() in PARTICLES:
        words.pop()
    return words[:4] if len([w for w in words if w.group() not in PARTICLES]) <= 4 else []


def _labelled(nlp_artifacts: NlpArtifacts | None, start: int, end: int, labels: frozenset[str]) -> bool:
    doc = nlp_artifacts.tokens if nlp_artifacts is not None else None
    return doc is not None and any(e.label_ in labels and e.start_char < end and start < e.end_char
                                   for e in doc.ents)


def _listed(text: str, singles: list[re.Match[str]], nlp_artifacts: NlpArtifacts | None) -> list[tuple[int, int]]:
    """Single name words (unfamiliar or listed) two or more of which stand in one list, one of them unfamiliar, and
    either one of them a listed name ("Leopold or Mirek") or the sentence about people ("Who should review
    it, Tesfaye or Eshetu?"): a list of unfamiliar words alone is as often tools ("Terraform, Ansible, Pulumi")."""
    groups: list[list[re.Match[str]]] = []
    for word in singles:
        if groups and LIST_JOINT.fullmatch(text, groups[-1][-1].end(), word.start()):
            groups[-1].append(word)
        else:
            groups.append([word])
    found = []
    for group in groups:
        if len(group) < 2 or not any(unfamiliar(w.group()) for w in group):
            continue
        if all(_labelled(nlp_artifacts, w.start(), w.end(), _NOT_PERSON_IN_LISTS) for w in group):
            continue
        sentence = _sentence(text, group[0].start(), group[-1].end())
        if _COMPARED.search(sentence):
            continue
        if any(_listed_name(w.group()) for w in group) or _ABOUT_PEOPLE.search(sentence):
            found += [(w.start(), w.end()) for w in group]
    return found


# Things are compared; people, in a prompt, are mostly listed ("Compare Xiaomi and Huawei", "Lidl or Aldi cheaper").
_COMPARED = re.compile(r"\b(?:compar\w*|vs\.?|versus|differ\w*|better|worse|cheaper|faster|easier|harder|prefer\w*|"
                       r"alternatives?|instead of|migrat\w*|switch\w*|install\w*|set up|configure\w*|learn\w*)\b",
                       re.IGNORECASE)


# A sentence about people: who, a personal pronoun, a person's role, or what one does to people.
_ABOUT_PEOPLE = re.compile(r"\b(?:who|whom|whose|he|she|him|his|her|hers|himself|herself|and I|and me|"
                           r"assign\w*|ask|asks|asked|tell|tells|told|invit\w*|thank\w*|congratulat\w*|remind\w*|"
                           r"cc|e-?mail\w*|meet|meets|met|meeting|colleagues?|teammates?|people|attendees?|speakers?|"
                           r"participants?|guests?|students?|employees?|candidates?|reviewers?|friends?)\b",
                           re.IGNORECASE)


def _sentence(text: str, start: int, end: int) -> str:
    """The sentence (or line) around ``start:end``."""
    before = max(text.rfind(c, 0, start) for c in ".!?\n")
    after = [i for i in (text.find(c, end) for c in ".!?\n") if i >= 0]
    return text[before + 1:min(after, default=len(text))]


def _addressed(text: str, singles: list[re.Match[str]]) -> list[tuple[int, int]]:
    """An unfamiliar word opening a sentence, a comma and a lower-case word after it ("Lembo, the report"), that
    is spoken to, not written about (``names.spoken_to``)."""
    return [(w.start(), w.end()) for w in singles
            if unfamiliar(w.group()) and _SENTENCE_START.search(text[:w.start()]) and spoken_to(text, w.end())]

