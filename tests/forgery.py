"""What a forger who holds the signing key does to a chain: re-hash it from its first event and re-sign every
checkpoint over the new heads. Tests use it to show that such a history verifies by itself and is caught only by
the checkpoint heads kept outside the store."""

from __future__ import annotations

from addons.store.events import Event, checkpoint_message, seal
from addons.store.keys import SigningKey


def resign(events: list[Event], key: SigningKey) -> list[Event]:
    prev = events[0].prev_hash
    for i, event in enumerate(events):
        if event.kind == "checkpoint":
            head = events[i - 1]
            event.detail = {**event.detail, "head_hash": head.hash,
                            "signature": key.sign(checkpoint_message(head.seq, head.hash))}
        seal(event, event.seq, prev)
        prev = event.hash
    return events
