"""The PII analyzer as it runs inside a worker process (``addons/masking/pool.py`` runs the pool around it).

Run as ``python -m addons.masking.worker``; it speaks ``addons/masking/protocol.py`` on stdin and stdout.
The analyzer is Presidio's ``AnalyzerEngine`` with its NLP engine built explicitly on the pinned
spaCy model (Presidio's default would try to download one) with only what Presidio needs: NER
(which carries its own tok2vec in ``en_core_web_sm``) and lower-cased lemmas for context words;
tagger, parser, lemmatizer and the shared tok2vec are left out (ARCHITECTURE.md says what they cost).
tldextract is pointed at its bundled suffix list so nothing is fetched.

Work arrives as ``Unit``s: a text and whether to run NER, the pattern recognizers, or both on it.
Long texts are split by the caller: pattern recognizers see the whole text (a PEM block or an
IBAN must not be cut), NER sees sentence-aligned chunks, batched through ``nlp.pipe``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import cast

from addons.masking.normalise import analysed, normalise, spans_back
from addons.masking.protocol import Answer, ProtocolError, Request, Span, Unit, receive, send
from addons.masking.recognizers import EngineSpec, entity_names, pattern_recognizers

# A sentence; the dot of a title ("Dr. Arega") ends none.
_SENTENCE = re.compile(r"(?:[^\n.!?]|(?<=\bMr)\.|(?<=\bMrs)\.|(?<=\bMs)\.|(?<=\bDr)\.|(?<=\bSt)\.|(?<=\bSr)\.)+[.!?]*")
_INNER_CAPITAL = re.compile(r"(?<=[\s(\"'\[/=,:-])[^\W\d_a-z]")
_VOCATIVE = re.compile(r",[ \t]+[a-z]")
_FIRST_WORD = re.compile(r"\s*((?=[^\W\d_a-z])[^\W\d_]+)")  # capitalised, any script ("Öner")


def name_windows(text: str, limit: int = 1200) -> list[tuple[int, int]]:
    """Spans of ``text`` that could name a person: sentences with a capitalised word past their first, or
    opening with a listed name, with a word a verb of speech follows ("Zerihun wrote") or with an unfamiliar
    word addressed ("Lembo, the report ..."). NER (the costly
    part) runs on these only; the small model finds no lower-case names anyway. Neighbouring sentences are
    merged, up to ``limit`` characters."""
    # the worker's; the gateway process never runs this
    from addons.masking.recognizers.name_shape import unfamiliar
    from addons.masking.recognizers.names import family_names, given_names
    from addons.masking.recognizers.person_context import FOLLOWED_BY

    spans: list[list[int]] = []
    for sentence in _SENTENCE.finditer(text):
        s = sentence.group()
        first = _FIRST_WORD.match(s)
        rest = first.end() if first else len(s) - len(s.lstrip())
        word = first.group(1) if first else ""
        if _INNER_CAPITAL.search(s, rest) or (first and (word in given_names() or word in family_names()
                                                          or FOLLOWED_BY.match(s, first.end())
                                                          or (_VOCATIVE.match(s, first.end()) and unfamiliar(word)))):
            if spans and spans[-1][1] >= sentence.start() - 2 and sentence.end() - spans[-1][0] <= limit:
                spans[-1][1] = sentence.end()
            else:
                spans.append([sentence.start(), sentence.end()])
    return [(start, end) for start, end in spans]


def _offline_tldextract() -> None:
    import tldextract.tldextract as tld

    tld.TLD_EXTRACTOR = tld.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


class Analyzer:
    """Presidio on a trimmed spaCy pipeline, for one ``EngineSpec``."""

    def __init__(self, spec: EngineSpec) -> None:
        import spacy
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
        from spacy.language import Language

        from addons.masking.recognizers.name_shape import NameShapeRecognizer
        from addons.masking.recognizers.names import NameListRecognizer, PlausibleSpacyRecognizer
        from addons.masking.recognizers.person_context import PersonContextRecognizer

        if "warden_lower_lemma" not in Language.factories:

            @Language.component("warden_lower_lemma")
            def lower_lemma(doc):  # context words are matched against lemmas; the lower-cased token is enough
                for token in doc:
                    token.lemma_ = token.lower_
                return doc

        self.spec = spec
        nlp = spacy.load(spec.model, exclude=["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer"])
        nlp.add_pipe("warden_lower_lemma")
        self.nlp = nlp
        engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": spec.model}],
                                ner_model_configuration=NerModelConfiguration(labels_to_ignore=["CARDINAL", "ORDINAL",
                                                                                                "QUANTITY", "MONEY",
                                                                                                "PERCENT"]))
        # Loaded here, trimmed: Presidio's load() would load the full pipeline.
        engine.nlp = {"en": nlp}  # type: ignore[assignment]  # presidio types it None until its own load()
        self.engine = engine
        recognizers = pattern_recognizers(spec)
        self.patterns = list(recognizers)
        if spec.ner_entities:
            recognizers.append(PlausibleSpacyRecognizer(supported_entities=list(spec.ner_entities)))
        if "PERSON" in spec.ner_entities:
            recognizers += [NameListRecognizer(), PersonContextRecognizer(), NameShapeRecognizer()]
        registry = RecognizerRegistry(recognizers=recognizers, supported_languages=["en"])
        self.analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"],
                                       default_score_threshold=spec.min_score)
        names = entity_names(spec)
        self.ner_entities = sorted(spec.ner_entities)
        self.pattern_entities = sorted(names - set(spec.ner_entities))

    def _artifacts(self, doc):
        # What SpacyNlpEngine.process_text makes of a doc (label mapping, scores), for docs made here in batches.
        return self.engine._doc_to_nlp_artifact(doc, "en")

    def analyze(self, units: list[Unit]) -> list[list[Span]]:
        """Spans found in each unit, in order: NER on the sentences that could name someone, patterns on all.
        Both read the unit's text normalised (``normalise.py``: obfuscations undone), the patterns its text as
        written too; every span is one of the unit's text."""
        out: list[list[Span]] = [[] for _ in units]
        readings = [normalise(unit.text) if unit.ner and self.ner_entities else None for unit in units]
        windows = [(i, start, reading.text[start:end]) for i, reading in enumerate(readings) if reading is not None
                   for start, end in name_windows(reading.text)]
        docs = self.nlp.pipe((text for _, _, text in windows), batch_size=32)
        for (i, start, text), doc in zip(windows, docs, strict=True):
            reading = readings[i]
            assert reading is not None
            out[i] += spans_back(reading, self._analyze(text, self.ner_entities, doc, start))
        for i, unit in enumerate(units):
            if unit.patterns and self.pattern_entities:
                out[i] += analysed(unit.text, self._patterns, readings[i])
        return [sorted(set(spans)) for spans in out]

    def _patterns(self, text: str) -> list[Span]:
        # Context words only raise the score of a match, so text no pattern matches needs no tokens,
        # and only the recognizers that matched run again with them.
        matched = self._matched_entities(text)
        if not matched:
            return []
        return self._analyze(text, matched, self.nlp.get_pipe("warden_lower_lemma")(self.nlp.make_doc(text)), 0)

    def _matched_entities(self, text: str) -> list[str]:
        found = {result.entity_type for recognizer in self.patterns
                 for result in recognizer.analyze(text, recognizer.supported_entities, None)}
        return sorted(found.intersection(self.pattern_entities))

    def _analyze(self, text: str, entities: list[str], doc, offset: int) -> list[Span]:
        found = self.analyzer.analyze(text, language="en", entities=entities, nlp_artifacts=self._artifacts(doc),
                                      score_threshold=self.spec.min_score)
        return [(r.entity_type, r.start + offset, r.end + offset, round(float(r.score), 3))
                for r in found]


def _no_wakeup_preemption() -> None:
    """Run as a batch task (Linux): a worker woken by the gateway's write does not take the CPU from the
    event loop in the middle of that write. Same priority."""
    if hasattr(os, "SCHED_BATCH"):
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except OSError as e:
            logging.getLogger("warden.pii").warning("warden: analyzer worker stays SCHED_OTHER: %s", e)


def serve(inbox, outbox) -> None:
    """A worker process's life: read the spec, build and warm the analyzer, say ready, then answer
    ``(task_id, units)`` until the gateway closes the pipe (the messages: ``addons/masking/protocol.py``).
    """
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    _no_wakeup_preemption()
    _offline_tldextract()
    spec = cast(EngineSpec, receive(inbox))
    try:
        analyzer = Analyzer(spec)
        analyzer.analyze([Unit("Warm up: Jane Doe, jane@example.com, +1 212 555 0123.")])
    except Exception as e:  # the pool reports it and fails closed
        send(outbox, (None, False, f"{type(e).__name__}: {e}"))
        return
    send(outbox, (None, True, os.getpid()))
    while True:
        try:
            task_id, units = cast(Request, receive(inbox))
        except ProtocolError:
            return  # the gateway went away
        result: Answer
        try:
            result = (task_id, True, analyzer.analyze(units))
        except Exception as e:
            result = (task_id, False, f"{type(e).__name__}: {e}")
        send(outbox, result)


if __name__ == "__main__":
    # stdout is the answer pipe: keep stray prints (libraries) away from it
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, answers)
