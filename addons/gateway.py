"""Warden's addon chain, in order. Run it with::

    mitmdump -s addons/gateway.py --set confdir=certs --set warden_rules=rules/default.yaml \\
        --set warden_db=data/warden.duckdb --set warden_admin=127.0.0.1:8081

The chain: config (the rules file, reloaded on change; unsafe mitmproxy options refused) -> identity (OIDC
token) -> layers (the protocol of every connection chosen here: TLS intercepted, HTTP to the chain,
anything else refused and recorded) -> intake (size, encoding) -> policy (upstream allow-list, rules)
-> pii (Presidio masking; pseudonyms restored in the answer) -> approval (review rules: the request waits
for approvers, or is answered with an approval id to retry) -> notifications (each approval announced to its
rule's webhook; Slack's Approve/Deny callbacks on a listener of their own) -> credentials (strip the caller's,
inject the upstream's) -> websocket (upgrades refused unless the upstream opts in; then every message
masked and recorded) -> answers (answer rules on what comes back: block or mask, streams as they pass) ->
recorder (DuckDB, before the request leaves) -> retention (purges what the rules' retention period outlived, on a
schedule). The admin API runs beside them.
Addons meet in the flow's facts (``addons/flow/meta.py``: one key in ``flow.metadata`` per fact, one owner
per key) and ask an owner for what it holds through ``ctx.master.addons.get``.
"""

from addons.admin import Admin
from addons.answers import Answers
from addons.approval import ApprovalGate
from addons.config import Config
from addons.credentials import Credentials
from addons.identity import IdentityGate
from addons.intake import Intake
from addons.layers import Layers
from addons.notifications import Notifications
from addons.pii import PiiMasking
from addons.policy import Policy
from addons.recorder import Recorder
from addons.retention import Retention
from addons.websocket import WebSocket

addons = [
    Config(), IdentityGate(), Layers(), Intake(), Policy(), PiiMasking(), ApprovalGate(), Notifications(),
    Credentials(), WebSocket(), Answers(), Recorder(), Retention(), Admin(),
]
