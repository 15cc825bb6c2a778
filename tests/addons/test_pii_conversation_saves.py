"""Review findings 6 and 7, through the pii addon's own calls: a turn's vault is merged into the conversations it
names at its request, and its answer keeps it only under the ids that answer confirms (never setting a conversation
back to an older state); an id the upstream rejects is never kept."""

from __future__ import annotations

import os

from mitmproxy.test import tflow, tutils

from addons.masking.conversations import Conversation, Conversations
from addons.pii import PiiMasking
from addons.store.keys import OriginalsKey

HOST = "api.openai.com:443"


def gateway() -> PiiMasking:
    pii = PiiMasking()
    pii.turns.kept = Conversations(OriginalsKey(os.urandom(32)), 60, 100)
    return pii


def request(pii: PiiMasking, ids: tuple[str, ...], value: str) -> tuple[tflow.HTTPFlow, str]:
    """A turn naming ``ids`` whose text names ``value``, masked: its pseudonym."""
    flow = tflow.tflow()
    assert pii.turns.kept is not None
    pii.turns.conversation_of[flow] = conversation = Conversation("alice", HOST, ids)
    pii.vaults[flow] = vault = pii.turns.kept.open(conversation, [value])
    token = vault.pseudonym("PERSON", value)
    pii.turns.keep(flow, vault, ())
    return flow, token


def answer(pii: PiiMasking, flow: tflow.HTTPFlow, status: int, *ids: str) -> None:
    flow.response = tutils.tresp(status_code=status)
    pii.turns.keep(flow, pii.vaults.get(flow), ids)


def test_a_late_answer_does_not_hand_a_later_turn_a_pseudonym_already_given() -> None:
    pii = gateway()
    turn0, ann = request(pii, (), "Ann")
    answer(pii, turn0, 200, "resp_0")
    a, bob = request(pii, ("resp_0",), "Bob")
    b, carol = request(pii, ("resp_0",), "Carol")
    answer(pii, a, 200, "resp_a", "resp_0")  # A's answer arrives after B's request, naming resp_0 again
    answer(pii, b, 200, "resp_b")
    c, dave = request(pii, ("resp_0",), "Dave")
    assert [ann, bob, carol, dave] == ["<PERSON_1>", "<PERSON_2>", "<PERSON_3>", "<PERSON_4>"]
    assert pii.vaults[c].restore("<PERSON_3> <PERSON_4>") == "Carol Dave"


def test_an_id_is_kept_only_once_a_2xx_answer_confirms_it() -> None:
    pii = gateway()
    assert pii.turns.kept is not None
    rejected, first = request(pii, ("resp_bogus",), "Ann")
    assert len(pii.turns.kept) == 0  # not at the request
    answer(pii, rejected, 404)
    again, second = request(pii, ("resp_bogus",), "Ann")
    assert len(pii.turns.kept) == 0 and first != second  # each its own new series: nothing was kept
    answer(pii, again, 200, "resp_next")
    assert len(pii.turns.kept) == 2  # now confirmed, and the answer's own id
    _, third = request(pii, ("resp_bogus",), "Ann")
    assert third == second
