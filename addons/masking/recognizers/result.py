"""What Warden's own recognizers share: a finding in the form Presidio's recognizers give it."""

from __future__ import annotations

from presidio_analyzer import AnalysisExplanation, EntityRecognizer, RecognizerResult


def finding(recognizer: EntityRecognizer, entity: str, start: int, end: int, score: float,
            reason: str) -> RecognizerResult:
    """``entity`` at ``text[start:end]``, explained by ``reason`` and naming ``recognizer`` in its metadata."""
    explanation = AnalysisExplanation(type(recognizer).__name__, score, textual_explanation=reason)
    # presidio assigns ``name`` in both branches of an if, unannotated: mypy cannot tell its type
    metadata = {RecognizerResult.RECOGNIZER_NAME_KEY: recognizer.name,  # type: ignore[has-type]
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: recognizer.id}
    return RecognizerResult(entity, start, end, score, explanation, recognition_metadata=metadata)
