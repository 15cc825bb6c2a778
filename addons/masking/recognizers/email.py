"""E-mail addresses, offline and including internal domains.

Presidio's ``EmailRecognizer`` keeps a match only if tldextract knows its suffix, which misses
internal domains (``jane@corp.internal``) and makes tldextract fetch the public suffix list over
the network. A gateway that must not let any address through accepts every syntactically valid
domain instead.
"""

from __future__ import annotations

import re

from presidio_analyzer.predefined_recognizers import EmailRecognizer

_DOMAIN = re.compile(r"@(?:[\w](?:[\w-]*[\w])?\.)+[^\W\d_]{2,}$")


class OfflineEmailRecognizer(EmailRecognizer):
    """EMAIL_ADDRESS: Presidio's pattern; the domain must have a dot and an alphabetic top label."""

    def __init__(self, supported_language: str = "en") -> None:
        super().__init__(supported_language=supported_language, name="OfflineEmailRecognizer")

    def validate_result(self, pattern_text: str) -> bool:
        return _DOMAIN.search(pattern_text) is not None
