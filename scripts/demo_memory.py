"""What the demo upstream remembers: stored responses and conversations (OpenAI Responses and Conversations) and
Assistants threads, so clients that let the provider keep the conversation can be shown through the gateway.

A turn that continues a conversation is answered with every user text of it so far, one a line: the echo of a
provider that remembers. Ids the demo never gave are answered 404, as OpenAI does. Files are accepted (their
bytes are kept with the request, not here) and answered as a file object.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def text_of(content: Any) -> str:
    """A message's text: a string, or its text parts (``text``, ``input_text``; Assistants' ``{"text": ...}``)."""
    if isinstance(content, str):
        return content
    texts = [p.get("text") for p in content or [] if isinstance(p, dict) and p.get("type") in ("text", "input_text")]
    return "".join(t if isinstance(t, str) else "" for t in texts)


@dataclass
class Turn:
    """A Responses turn: its new id, what it answers, and the conversation it is part of (if any)."""

    id: str
    reply: str
    conversation: str | None = None


class UnknownId(KeyError):
    """A request names a response, conversation or thread the demo never gave."""

    def __init__(self, what: str, given: str) -> None:
        super().__init__(given)
        self.message = f"{what} with id '{given}' not found."


class Memory:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.responses: dict[str, list[str]] = {}
        self.conversations: dict[str, list[str]] = {}
        self.threads: dict[str, list[dict]] = {}

    # -- Responses and Conversations ---------------------------------------------------------------------

    def respond(self, req: dict, text: str) -> Turn:
        """A Responses turn saying ``text``: alone, or after a stored response or in a conversation."""
        previous, conversation = req.get("previous_response_id"), req.get("conversation")
        if isinstance(conversation, dict):
            conversation = conversation.get("id")
        with self._lock:
            history: list[str] = []
            if previous is not None:
                if previous not in self.responses:
                    raise UnknownId("Previous response", str(previous))
                history = self.responses[previous]
            if conversation is not None:
                if conversation not in self.conversations:
                    raise UnknownId("Conversation", str(conversation))
                history = self.conversations[conversation]
            texts = [*history, text]
            turn = Turn(new_id("resp"), "\n".join(texts) if history else text, conversation)
            self.responses[turn.id] = texts
            if conversation is not None:
                self.conversations[conversation] = texts
        return turn

    def new_conversation(self, req: dict) -> dict:
        items = req.get("items")
        items = items if isinstance(items, list) else []
        texts = [text_of(i.get("content")) for i in items if isinstance(i, dict) and i.get("role", "user") == "user"]
        conversation = new_id("conv")
        with self._lock:
            self.conversations[conversation] = texts
        return {"id": conversation, "object": "conversation", "created_at": int(time.time()), "metadata": {}}

    # -- Assistants threads ---------------------------------------------------------------------------------

    def _message(self, thread: str, role: str, text: str) -> dict:
        message = {"id": new_id("msg"), "object": "thread.message", "created_at": int(time.time()),
                   "thread_id": thread, "role": role, "status": "completed", "assistant_id": None, "run_id": None,
                   "attachments": [], "metadata": {},
                   "content": [{"type": "text", "text": {"value": text, "annotations": []}}]}
        self.threads[thread].append(message)
        return message

    def new_thread(self, req: dict) -> dict:
        thread = new_id("thread")
        with self._lock:
            self.threads[thread] = []
            for m in req.get("messages") or []:
                if isinstance(m, dict):
                    self._message(thread, str(m.get("role", "user")), text_of(m.get("content")))
        return {"id": thread, "object": "thread", "created_at": int(time.time()), "metadata": {},
                "tool_resources": {}}

    def thread_request(self, method: str, path: str, req: dict) -> dict:
        """``/v1/threads/{id}/messages`` (POST adds one, GET lists them newest first) and ``/runs`` (POST: a run
        that answers at once with every user message so far)."""
        match = re.fullmatch(r"/v1/threads/([^/]+)/(messages|runs)", path)
        if match is None:
            raise UnknownId("Endpoint", path)
        thread, what = match.groups()
        with self._lock:
            if thread not in self.threads:
                raise UnknownId("Thread", thread)
            if what == "messages" and method == "GET":
                data = list(reversed(self.threads[thread]))
                return {"object": "list", "data": data, "has_more": False,
                        "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}
            if what == "messages":
                return self._message(thread, str(req.get("role", "user")), text_of(req.get("content")))
            users = [m["content"][0]["text"]["value"] for m in self.threads[thread] if m["role"] == "user"]
            run = new_id("run")
            self._message(thread, "assistant", "\n".join(users))["run_id"] = run
        return {"id": run, "object": "thread.run", "created_at": int(time.time()), "thread_id": thread,
                "assistant_id": req.get("assistant_id"), "status": "completed", "model": "demo",
                "instructions": "", "tools": [], "metadata": {}, "parallel_tool_calls": True}


def file_object(body: bytes) -> dict:
    """The file object OpenAI answers an upload with (``purpose`` and ``filename`` read from the form)."""
    filename = re.search(rb'filename="([^"]*)"', body)
    purpose = re.search(rb'name="purpose"\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]*)', body)
    return {"id": new_id("file"), "object": "file", "bytes": len(body), "created_at": int(time.time()),
            "filename": filename.group(1).decode(errors="replace") if filename else "upload",
            "purpose": purpose.group(1).decode(errors="replace") if purpose else "user_data", "status": "processed"}
