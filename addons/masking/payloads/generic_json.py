"""Any other JSON: every string value, walked (keys are left alone). In a stream, every event is a whole.

That is what the base ``Adapter`` does; this file names it so the registry lists it beside the others.
"""

from __future__ import annotations

from addons.masking.payloads.base import Adapter

ADAPTER = Adapter()
