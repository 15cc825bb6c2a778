"""Intake's body checks: well-formed for the declared type and charset, nested within the bound."""

from __future__ import annotations

from addons.bodies.usage import RequestShape
from addons.flow.errors import DuplicateJsonKey
from addons.intake import check_body


def test_body_checks() -> None:
    assert check_body(b'{"a": 1}', "application/json") == RequestShape()
    assert check_body(b"\xff", "application/octet-stream") is None
    assert "offset 1" in check_body(b'"\xff"', "application/json").message
    assert "line 1, column" in check_body(b'{"a": }', "application/vnd.api+json").message
    assert check_body(b"caf\xe9", "text/plain; charset=UTF-8").status == 400
    assert check_body(b"caf\xe9", "text/plain") is None  # no charset declared: not ours to judge


def test_json_nested_past_the_bound_is_refused_without_recursion() -> None:
    problem = check_body(b"[" * 200 + b"]" * 200, "application/json")
    assert problem is not None and "more than 128 levels deep" in problem.message
    assert check_body(b"[" * 128 + b"]" * 128, "application/json") == RequestShape()


def test_json_that_names_a_key_twice_is_refused_anywhere_in_the_body() -> None:
    problem = check_body(b'{"messages": [{"content": "a", "content": "b"}]}', "application/json")
    assert isinstance(problem, DuplicateJsonKey) and problem.status == 400
    assert 'the key "content" twice' in problem.message and "send each key once" in problem.message
    assert check_body(b'{"a": {"content": 1}, "b": {"content": 2}}', "application/json") == RequestShape()  # apart
