"""English words, to tell a capitalised English word ("Streams", "Configure") from a name or a place.

The lemmas of the lemmatizer tables shipped in the installed spaCy model (WordNet's nouns, verbs, adjectives
and adverbs, about 88,000) and their irregular forms; inflections are undone by suffix. Read from the model's
files when a worker starts, nothing fetched. WordNet holds some names too ("maria", "victoria"): callers
ask the name lists first.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from addons.masking.recognizers import SPACY_MODEL

# Inflections undone before a word is looked up: "pipelines", "carried", "running", "boxes".
_SUFFIXES = (("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"), ("'s", ""),
             ("’s", ""), ("er", ""), ("est", ""), ("ly", ""))


@cache
def english_words() -> frozenset[str]:
    """English words, lower-cased: the lemmas of the spaCy model's lemmatizer tables (WordNet's nouns,
    verbs, adjectives and adverbs) and their irregular forms."""
    import spacy.util
    from spacy.lookups import Lookups

    words: set[str] = set()
    package = Path(spacy.util.get_package_path(SPACY_MODEL))
    for folder in package.glob("*/lemmatizer/lookups"):
        lookups = Lookups().from_disk(folder)
        for table in ("lemma_index", "lemma_exc"):
            if lookups.has_table(table):
                for pos in lookups.get_table(table).values():
                    words.update(w for w in pos if isinstance(w, str) and "_" not in w)
    return frozenset(words)


def is_english(word: str) -> bool:
    """Whether ``word`` (any case) is an English word or an inflection of one."""
    words, lower = english_words(), word.lower()
    if lower in words:
        return True
    return any(lower.endswith(end) and len(lower) - len(end) >= 3 and lower[:len(lower) - len(end)] + add in words
               for end, add in _SUFFIXES)


