"""The entity names the rules file may use: what the built-in recognizers (``addons/masking/recognizers``) find."""

# Entities spaCy's NER finds (Presidio's names for them).
NER_ENTITIES = ("PERSON", "LOCATION", "NRP", "ORGANIZATION")

# The built-in pattern entities, by name (kept in sync with the recognizers' factories; a unit test checks).
PATTERN_ENTITIES = (
    "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS", "URL", "US_BANK_NUMBER",
    "US_DRIVER_LICENSE", "US_PASSPORT", "US_ITIN", "UK_NHS", "CRYPTO", "MEDICAL_LICENSE", "SECRET",
)
BUILTIN_ENTITIES = NER_ENTITIES + PATTERN_ENTITIES
