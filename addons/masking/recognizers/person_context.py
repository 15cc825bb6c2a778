"""Person names found by what stands around them, whatever culture they come from.

A name nobody listed is still a name after "Dear", "Mr.", "customer", "ask ... to", in a `name:` field,
under "Best regards," or before "wrote:". ``PersonContextRecognizer`` reports the capitalised words
(``names.name_words``: particles, hyphens and apostrophes included, up to four) that such context
introduces, at a score below spaCy's and the name lists' (context alone decides). Words a cue is often
followed by without naming anyone ("Dear Team", "Hi All", English words) are left alone; names in
lower case are not found.
"""

from __future__ import annotations

import re

from presidio_analyzer import LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from addons.masking.recognizers.names import LIST_JOINT, WORD, common_words, name_words
from addons.masking.recognizers.result import finding

_TITLES = (r"mr|mrs|ms|miss|mx|dr|prof|professor|sir|dame|herr|frau|sr|sra|srta|señor|señora|señorita|don|doña|"
           r"dona|signor|signora|signorina|sig|dott|mme|mlle|monsieur|madame|pan|pani|dhr|mevr|meneer|mevrouw|fru|"
           r"bapak|pak|ibu|shri|smt|sri|alhaji|mallam|sheikh|hon|rev|fr|sen|gen|capt|sgt|lt|col")
_SALUTATIONS = (r"(?:hi|hello|hey)[ \t]*[,!]?[ \t]+(?:this is|it's|it is|i am|i'm)|"
                r"dear|hi|hello|hey|hallo|hola|ciao|bonjour|olá|ola|cześć|czesc|hej|merhaba|salut|salve|greetings|"
                r"good morning|good afternoon|good evening|welcome|congratulations|congrats|thanks|thank you")
_PEOPLE = (r"customer|client|patient|employee|user|colleague|co-?worker|manager|boss|landlord|landlady|tenant|"
           r"neighbou?r|candidate|applicant|contact|student|pupil|teacher|doctor|nurse|friend|wife|husband|son|"
           r"daughter|mother|father|mom|mum|dad|brother|sister|partner|fianc[ée]e?|assistant|author|owner|member|"
           r"speaker|attendees?|recipient|sender|driver|guest|intern|tutor|lawyer|supervisor|director|ceo|cto|cfo|"
           r"founder|mentor|mentee|teammate|uncle|aunt|cousin|grandma|grandpa|grandmother|grandfather|babysitter|"
           r"plumber|reviewer|assignee|approver|requester|caller|agent|representative|rep|technician|engineer|"
           r"developer|designer|analyst|accountant|secretary|officer|consultant|volunteer|coach|player|"
           r"my name is|i am|i'm|call me|signed|yours truly|on behalf of|attn|attention|c/o|cc|bcc|"
           r"(?:authored|written|signed|opened|reported|created|approved|sent|submitted|filed|raised|reviewed|"
           r"assigned|requested|prepared|presented|led|hosted|organi[sz]ed) by|assigned to|addressed to|"
           r"(?:email|e-mail|write|send|reply|talk|speak|spoke|chat|check|meet|met|forward|reach out|get back|"
           r"sync|catch up|say hello|say hi|hand it over)(?:s|ed|ing)?(?:[ \t]+(?:it|this|that|them|back))?[ \t]+"
           r"(?:to|with)|"
           r"(?:ask|tell|email|e-mail|call|ping|remind|message|text|thank|invite|contact|meet|notify|inform|"
           r"introduce|congratulate|cc|phone|visit|help|pay|hire|fire|promote|interview|welcome)|"
           r"(?:wedding|birthday|funeral|anniversary|retirement|farewell|promotion|engagement|"
           r"graduation|leaving party|baby shower)[ \t]+(?:of|for)")
_FIELDS = (r"first[_ -]?name|last[_ -]?name|given[_ -]?name|family[_ -]?name|full[_ -]?name|sur[_ -]?name|"
           r"middle[_ -]?name|display[_ -]?name|contact[_ -]?name|customer[_ -]?name|name|author|contact|customer|"
           r"owner|recipient|sender|assignee|reviewer|employee|patient|signed|from|to|cc|attendee|speaker|"
           r"nombre|apellidos?|nome|cognome|naam|achternaam|voornaam|nom|prénom|prenom|vorname|nachname|imię|imie|"
           r"nazwisko|sobrenome|efternamn|förnamn|ad|soyad|soyadı|jméno|příjmení")
_SIGN_OFFS = (r"regards|best|thanks|thank you|many thanks|cheers|sincerely|yours|best wishes|warm regards|"
              r"kind regards|best regards|respectfully|take care|love|saludos|un saludo|grazie|cordialement|"
              r"groeten|met vriendelijke groet|pozdrawiam|mit freundlichen grüßen|viele grüße|liebe grüße|"
              r"atenciosamente|abraços|un saluto|cordiali saluti|med vänliga hälsningar|hälsningar|saygılarımla")
_VERBS_AFTER = (r"wrote|writes|said|says|asked|asks|told|replied|mentioned|emailed|texted|explained|"
                r"suggested|thinks|thought|confirmed|agreed|signed|joined|complained|reported|requested|"
                r"approved|noted|added|commented|answered|responded|promised|sent|shared|posted|wants|needs|"
                r"is out|is on leave|will join|has joined|has left")

# Each cue ends where the name may start; the name itself is read by ``name_words``.
_BEFORE = re.compile(
    rf"(?:\b(?:{_TITLES})\.?[ \t]+"
    rf"|(?:^|(?<=[\s,;:(\"'\[]))(?:{_SALUTATIONS})[ \t]*,?[ \t]+"
    rf"|\b(?:{_PEOPLE})[ \t]*[:,]?[ \t]+"
    rf"|(?:^|(?<=[\s,;{{(\"'\[]))[\"']?(?:{_FIELDS})[\"']?[ \t]*[:=][ \t]*[\"']?"
    rf"|(?:^|(?<=\n))[ \t]*(?:{_SIGN_OFFS})[ \t]*[,.!:\-–—]*[ \t]*(?:\r?\n[ \t]*)+(?:[-–—][ \t]*)?)",
    re.IGNORECASE)
FOLLOWED_BY = re.compile(rf"(?:[ \t]+(?:{_VERBS_AFTER})\b|,[ \t]+who\b|[ \t]+and[ \t]+I\b|[ \t]*\((?:n[ée]e|born)\b)",
                         re.IGNORECASE)


class PersonContextRecognizer(LocalRecognizer):
    """PERSON: capitalised words that a title, salutation, person word, name field or sign-off introduces,
    or that a verb of speech follows."""

    SCORE = 0.6

    def __init__(self, supported_language: str = "en") -> None:
        super().__init__(supported_entities=["PERSON"], supported_language=supported_language,
                         name="PersonContextRecognizer")

    def load(self) -> None:
        common_words()

    def analyze(self, text: str, entities: list[str],
                nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
        spans = [self._introduced(text, cue.end()) for cue in _BEFORE.finditer(text)]
        spans += [self._followed(text, cue.start()) for cue in FOLLOWED_BY.finditer(text)]
        return [finding(self, "PERSON", start, end, self.SCORE, "person context") for start, end in spans if end]

    @staticmethod
    def _introduced(text: str, start: int) -> tuple[int, int]:
        """The name at ``start``, and the names listed after it ("to Doria, Benedikt and Danijela")."""
        words = _trim(name_words(text, start))
        if not words:
            return 0, 0
        end = words[-1].end()
        for _ in range(3):
            joint = LIST_JOINT.match(text, end)
            following = _trim(name_words(text, joint.end())) if joint else []
            if joint is None or not following or following[0].start() != joint.end():
                break
            end = following[-1].end()
        return words[0].start(), end

    @staticmethod
    def _followed(text: str, end: int) -> tuple[int, int]:
        words: list[re.Match[str]] = []
        for match in reversed(list(WORD.finditer(text, max(0, end - 120), end))):
            between = text[match.end():words[0].start() if words else end]
            if between not in ("", " ") or not match.group()[0].isupper() or len(words) == 4:
                break
            words.insert(0, match)
        words = _trim(words)
        return (words[0].start(), words[-1].end()) if words else (0, 0)


def _trim(words: list[re.Match[str]]) -> list[re.Match[str]]:
    """The run without English words at its ends ("Dear Hiring Manager" names nobody)."""
    common = common_words()
    while words and words[0].group().lower() in common:
        words = words[1:]
    while words and words[-1].group().lower() in common:
        words = words[:-1]
    return words
