"""The generated corpus through a real gateway: what reaches the upstream, measured and reported.

Pass marks (issue 4): no pattern entity value reaches the upstream; person names reach it in at
most 5% of cases; benign prompts (code, maths, prose) reach it unaltered in at least 98%.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import rules_for
from tests.corpus import benign_prompts, pii_prompts

pytestmark = pytest.mark.e2e

RULES_MASKING = r"""masking:
  recognizers:
    - entity: ACME_ID
      patterns: ['\bACME-\d{6}\b']
rules:"""


def test_corpus_rates(gateway_factory, upstream, capsys) -> None:
    gw = gateway_factory(rules_for(upstream.port).replace("rules:", RULES_MASKING, 1),
                         extra_args=("--set", "warden_pii_workers=2"))
    prompts = pii_prompts(240) + benign_prompts()
    url = f"https://localhost:{upstream.port}/v1/chat/completions"

    with gw.client(timeout=60) as client:
        def send(index: int) -> int:
            body = {"model": "demo", "messages": [{"role": "user", "content": prompts[index].text}]}
            return client.post(url, json=body, headers={"x-corpus-id": str(index)}).status_code

        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(send, range(len(prompts))))
    assert statuses == [200] * len(prompts)

    sent: dict[int, str] = {}
    for request in upstream.received:
        corpus_id = dict((k.lower(), v) for k, v in request["headers"]).get("x-corpus-id")
        if corpus_id is not None:
            sent[int(corpus_id)] = json.loads(request["body"])["messages"][0]["content"]
    assert len(sent) == len(prompts)

    reached: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        for entity, value in prompt.planted:
            reached.setdefault(entity, [0, 0])
            reached[entity][1] += 1
            reached[entity][0] += value in sent[i]
    benign = [i for i, p in enumerate(prompts) if not p.planted]
    unaltered = sum(sent[i] == prompts[i].text for i in benign)

    with capsys.disabled():
        print(f"\nPII corpus through the gateway: {len(prompts) - len(benign)} prompts with planted entities, "
              f"{len(benign)} benign")
        for entity, (leaked, total) in sorted(reached.items()):
            print(f"  {entity:14} reached the upstream {leaked:3}/{total:3} ({leaked / total:.1%})")
        print(f"  benign prompts unaltered {unaltered}/{len(benign)} ({unaltered / len(benign):.1%})")

    for entity, (leaked, total) in reached.items():
        if entity == "PERSON":
            assert leaked / total <= 0.05, f"person names reached the upstream in {leaked}/{total}"
        else:
            assert leaked == 0, f"{entity} values reached the upstream in {leaked}/{total} prompts"
    assert unaltered / len(benign) >= 0.98
