"""A test double for the PII addon (loaded with -s before the gateway): masks e-mail addresses in
request bodies and hands the original to the recorder the way the real masking addon does."""

import re

from addons.flow.meta import meta

EMAIL = re.compile(rb"[\w.+-]+@[\w-]+\.[\w.]+")


def request(flow):
    body = flow.request.content or b""
    masked = EMAIL.sub(b"<EMAIL>", body)
    if masked != body:
        meta(flow).original_request_body = flow.request.raw_content
        flow.request.content = masked
