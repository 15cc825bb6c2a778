"""Seeded JSON request bodies with one value planted at a random position (issue 11's property: any JSON body
with a planted e-mail, card or SSN at any position yields valid JSON without it).

``Planter`` builds API-shaped and free-form documents, nested, with tool-call arguments holding JSON and data
URIs and base64 documents holding text, and plants its value once: as a whole value, inside prose, as a key,
inside embedded JSON or an encoded document, or as the whole body. ``decoded_strings`` reads a document back
the way a reader who decodes everything would. Used by the end-to-end sample (the real gateway); the unit
property tests draw their bodies with hypothesis (``tests/strategies.py``) and read them with ``decoded_strings``.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any
from urllib.parse import quote, unquote_to_bytes

WORDS = "the report is ready please send it to our team before noon thanks Paris meeting".split()
KEYS = ("model", "messages", "role", "content", "type", "text", "name", "metadata", "tools", "function",
        "description", "input", "source", "data", "id", "user", "url", "filename", "system", "notes", "Weird Key")


class Planter:
    """Builds a document, planting ``value`` once at a random position as it goes."""

    def __init__(self, rng: random.Random, value: str) -> None:
        self.rng, self.value, self.planted = rng, value, False

    def chance(self) -> bool:
        if not self.planted and self.rng.random() < 0.08:
            self.planted = True
            return True
        return False

    def prose(self) -> str:
        words = self.rng.choices(WORDS, k=self.rng.randint(1, 8))
        if self.chance():
            words.insert(self.rng.randint(0, len(words)), self.value)
        return " ".join(words)

    def string(self) -> str:
        form = self.rng.random()
        if form < 0.15 and self.chance():
            return self.value  # the whole value
        if form < 0.25:
            return self.rng.choice(("auto", "user", "gpt-4o", "call_9f2", "text", ""))
        if form < 0.35:
            encoded = self.prose().encode()
            if self.rng.random() < 0.5:
                return "data:text/plain;base64," + base64.b64encode(encoded).decode()
            return "data:text/plain;charset=utf-8," + quote(encoded)
        return self.prose()

    def key(self) -> str:
        if self.chance():
            return self.rng.choice((self.value, f"note for {self.value}"))
        return self.rng.choice(KEYS)

    def value_at(self, depth: int) -> Any:
        kind = self.rng.random()
        if depth <= 0 or kind < 0.45:
            return self.rng.choice((self.string, self.string, lambda: self.rng.randint(-5, 10**6), lambda: 2.5,
                                    lambda: True, lambda: None))()
        if kind < 0.75:
            return self.object({}, self.rng.randint(0, 4), depth - 1)
        return [self.value_at(depth - 1) for _ in range(self.rng.randint(0, 4))]

    def object(self, into: dict, size: int, depth: int) -> dict:
        """``into`` with ``size`` more keys (never one it has: a value planted there must not be overwritten)."""
        for _ in range(size):
            key = self.key()
            while key in into:
                key += "_"
            into[key] = self.value_at(depth)
        return into

    def arguments(self) -> str:
        return json.dumps(self.object({}, self.rng.randint(1, 3), 2))

    def document(self, path: str) -> Any:
        return self.object(self.skeleton(path), self.rng.randint(0, 3), 3)

    def skeleton(self, path: str) -> Any:
        if path == "/v1/chat/completions":
            messages = [{"role": self.rng.choice(("user", "system")), "content": self.prose()},
                        {"role": "assistant", "content": None, "tool_calls": [
                            {"id": "call_1", "type": "function",
                             "function": {"name": "f", "arguments": self.arguments()}}]},
                        {"role": "user", "content": [{"type": "text", "text": self.prose()},
                                                     {"type": "image_url", "image_url": {"url": self.string()}}]}]
            return {"model": self.string(), "messages": messages}
        if path == "/v1/messages":
            return {"model": "claude", "system": self.prose(), "messages": [
                {"role": "user", "content": [{"type": "text", "text": self.prose()}, {"type": "document", "source": {
                    "type": "base64", "media_type": "text/plain",
                    "data": base64.b64encode(self.prose().encode()).decode()}}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t", "name": "f", "input": self.value_at(2)}]}]}
        if path == "/v1/responses":
            return {"model": "gpt", "instructions": self.prose(), "input": [
                {"role": "user", "content": [{"type": "input_text", "text": self.prose()}]},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": self.arguments()}]}
        if path == "/v1/embeddings":
            return {"model": "e", "input": [self.prose(), self.prose()]}
        return self.object({}, self.rng.randint(0, 4), 4)

    def body(self, path: str) -> Any:
        if self.rng.random() < 0.03:
            self.planted = True
            return f"just a string with {self.value} in it"  # a JSON body may be a bare string
        document = self.document(path) if self.rng.random() < 0.9 else [self.value_at(4)]
        if not self.planted:  # nowhere yet: a field of the document's own
            self.planted = True
            if isinstance(document, dict):
                document[self.rng.choice(KEYS) + "_x"] = self.prose_with_value()
            else:
                document.append(self.prose_with_value())
        return document

    def prose_with_value(self) -> str:
        return f"{self.rng.choice(WORDS)} {self.value} {self.rng.choice(WORDS)}"


def decoded_strings(node: Any) -> list[str]:
    """Every string and key in ``node``, with data URIs and base64 decoded and embedded JSON parsed."""
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out += [key, *decoded_strings(value)]
        if node.get("type") == "base64" and isinstance(node.get("data"), str):
            out.append(base64.b64decode(node["data"]).decode())
    elif isinstance(node, list):
        for value in node:
            out += decoded_strings(value)
    elif isinstance(node, str):
        out.append(node)
        if node.startswith("data:") and "," in node:
            head, data = node.split(",", 1)
            raw = base64.b64decode(data) if head.endswith(";base64") else unquote_to_bytes(data)
            out.append(raw.decode())
        elif node[:1] in "[{":
            try:
                out += decoded_strings(json.loads(node))
            except ValueError:
                pass
    return out
