"""A test double for the PII addon (loaded with -s before the gateway): masks e-mail addresses in
request bodies and keeps the original where the real masking addon keeps it, for the recorder."""

import re

from mitmproxy import ctx

from addons.flow.meta import Originals

EMAIL = re.compile(rb"[\w.+-]+@[\w-]+\.[\w.]+")


def request(flow):
    body = flow.request.content or b""
    masked = EMAIL.sub(b"<EMAIL>", body)
    if masked != body:
        ctx.master.addons.get("piimasking").originals[flow] = Originals(request=flow.request.raw_content)
        flow.request.content = masked
