"""pseudonymize: ``<ENTITY_N>``, the same value the same pseudonym within a flow, restored in the answer."""

from __future__ import annotations

from presidio_anonymizer.entities import InvalidParamError
from presidio_anonymizer.operators import Operator, OperatorType

from addons.masking.pseudonyms import Vault


class Pseudonymize(Operator):
    """Replace the value with its pseudonym from the flow's vault (``params["vault"]``)."""

    def operate(self, text: str, params: dict | None = None) -> str:
        assert params is not None
        return params["vault"].pseudonym(params["entity_type"], text)

    def validate(self, params: dict | None = None) -> None:
        if not params or not isinstance(params.get("vault"), Vault):
            raise InvalidParamError("pseudonymize needs the flow's vault")

    def operator_name(self) -> str:
        return "pseudonymize"

    def operator_type(self) -> OperatorType:
        return OperatorType.Anonymize
