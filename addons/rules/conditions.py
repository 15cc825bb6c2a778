"""Rule conditions (``when:``): CEL expressions over who asks, what they ask, what masking found, and when.

CEL (the Common Expression Language of Kubernetes and Envoy) through ``cel-expr-python``, the CEL team's
binding of cel-cpp: expressions are parsed and type-checked once, when the rules file loads, against the
four variables declared here as protobuf messages, so a misspelt variable or field, or a comparison of a
number with a string, is a start-up error naming file, rule and field, never a surprise at request time.

``identity``: sub, email, groups, client_id, kind ("person" or "service"), method (how the token came).
``request``: host, method, path, scheme, upstream, model, body_size, messages, tools, stream, content_type.
``pii``: counts (entity -> number found; every entity the rules mask is present, 0 if none), total, entities,
inspected (false when the body, or content in it, could not be read: binary passed by ``unknown_content``).
``time``: hour, minute, weekday ("Mon" ... "Sun"), date ("2026-12-01"), zone (the zone they are read in).
``answer`` (answer rules only, ``addons/rules/answers.py``): status, content_type, streamed, counts (entity ->
number masking found in the answer so far; every entity the rules mask is present), total, entities.

A request rule's condition reads identity, request, pii and time (``REQUEST``); one that reads ``pii`` is
decided after analysis (``reads_pii``), the others before it. An answer rule's reads identity, request, time and
answer (``ANSWER``); one that reads ``answer`` is evaluated on the answer as it passes (``reads_answer``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from cel_expr_python import cel
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = "warden"
_F = descriptor_pb2.FieldDescriptorProto

# name -> [(field, type)]; "string[]" is a repeated string, "map" a map<string, int64>.
VARIABLES: dict[str, list[tuple[str, str]]] = {
    "identity": [("sub", "string"), ("email", "string"), ("groups", "string[]"), ("client_id", "string"),
                 ("kind", "string"), ("method", "string")],
    "request": [("host", "string"), ("method", "string"), ("path", "string"), ("scheme", "string"),
                ("upstream", "string"), ("model", "string"), ("body_size", "int"), ("messages", "int"),
                ("tools", "string[]"), ("stream", "bool"), ("content_type", "string")],
    "pii": [("counts", "map"), ("total", "int"), ("entities", "string[]"), ("inspected", "bool")],
    "time": [("hour", "int"), ("minute", "int"), ("weekday", "string"), ("date", "string"), ("zone", "string")],
    "answer": [("status", "int"), ("content_type", "string"), ("streamed", "bool"), ("counts", "map"),
               ("total", "int"), ("entities", "string[]")],
}
REQUEST = ("identity", "request", "pii", "time")  # what a request rule's condition may read
ANSWER = ("identity", "request", "time", "answer")  # what an answer rule's condition may read
_SCALARS = {"string": _F.TYPE_STRING, "int": _F.TYPE_INT64, "bool": _F.TYPE_BOOL}


class ConditionError(ValueError):
    """A condition that does not parse or type-check; ``str()`` is CEL's message with the position."""


def _message_name(variable: str) -> str:
    return variable.capitalize()


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name="warden_conditions.proto", package=_PACKAGE, syntax="proto3")
    for variable, fields in VARIABLES.items():
        message = proto.message_type.add(name=_message_name(variable))
        for number, (name, kind) in enumerate(fields, 1):
            if kind == "map":
                entry = message.nested_type.add(name=f"{name.capitalize()}Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
                entry.field.add(name="value", number=2, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL)
                message.field.add(name=name, number=number, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                                  type_name=f".{_PACKAGE}.{message.name}.{entry.name}")
            else:
                repeated = kind.endswith("[]")
                message.field.add(name=name, number=number, type=_SCALARS[kind.removesuffix("[]")],
                                  label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    return proto


@cache
def _types() -> tuple[descriptor_pool.DescriptorPool, dict[str, Any]]:
    pool = descriptor_pool.DescriptorPool()
    proto = _file()
    pool.Add(proto)
    classes = message_factory.GetMessages([proto], pool=pool)
    return pool, {v: classes[f"{_PACKAGE}.{_message_name(v)}"] for v in VARIABLES}


@cache
def _env(scope: tuple[str, ...] = REQUEST, without: str | None = None) -> Any:
    pool, _ = _types()
    variables = {v: cel.Type(f"{_PACKAGE}.{_message_name(v)}") for v in scope if v != without}
    return cel.NewEnv(pool, variables=variables)


def _first_line(e: Exception) -> str:
    # cel-cpp: "INVALID_ARGUMENT: ERROR: <input>:1:9: undefined field 'sbu' ...\n | source\n | ...^"
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    for prefix in ("INVALID_ARGUMENT: ", "ERROR: ", "<input>:"):
        first = first.removeprefix(prefix)
    return f"at {first}" if first[:1].isdigit() else first


@dataclass(frozen=True)
class Condition:
    """A compiled ``when:`` expression."""

    source: str
    program: Any
    reads_pii: bool
    reads_answer: bool = False


def _reads(source: str, scope: tuple[str, ...], variable: str) -> bool:
    if variable not in scope:
        return False
    try:
        _env(scope, without=variable).compile(source)
        return False
    except RuntimeError:  # it compiles with the variable and not without: it reads it
        return True


def compile_condition(source: str, scope: tuple[str, ...] = REQUEST) -> Condition:
    """``source`` parsed and type-checked against the variables of ``scope`` (``REQUEST`` or ``ANSWER``); it must
    give a bool. Raises ``ConditionError``."""
    if not source.strip():
        raise ConditionError("the condition is empty")
    try:
        program = _env(scope).compile(source)
    except RuntimeError as e:
        raise ConditionError(_first_line(e)) from None
    returns = program.return_type()
    if returns != cel.Type.BOOL and returns != cel.Type.DYN:
        raise ConditionError(f"the condition gives {returns.name().lower()}, not a bool (true or false)")
    return Condition(source, program, _reads(source, scope, "pii"), _reads(source, scope, "answer"))


def checked_condition(source: str | None, scope: tuple[str, ...] = REQUEST) -> str | None:
    """``source`` unchanged if it compiles in ``scope``; else a ``ValueError`` naming it (for the rules' validators)."""
    if source is not None:
        try:
            compile_condition(source, scope)
        except ConditionError as e:
            raise ValueError(f"invalid CEL condition {source!r}: {e}") from None
    return source


def conditions_together(conditions: Sequence[Condition]) -> Any:
    """One program giving the list of ``conditions``' results: one evaluation for all rules (each alone costs a
    call into cel-cpp). An error in any of them makes the whole list an error: evaluate them one by one then."""
    if not conditions:
        return None
    return _env().compile("[" + ", ".join(f"({c.source})" for c in conditions) + "]")


class EvaluationError(Exception):
    """A condition that type-checked failed on this request's facts (e.g. a map key it does not hold)."""


class Facts:
    """The variables for one request (or its answer: ``scope``), built once and read by every rule."""

    def __init__(self, identity: Mapping[str, Any], request: Mapping[str, Any], time: Mapping[str, Any],
                 pii: Mapping[str, Any] | None = None, *, answer: Mapping[str, Any] | None = None,
                 scope: tuple[str, ...] = REQUEST) -> None:
        _, classes = _types()
        self.scope = scope
        self.values = {"identity": classes["identity"](**_present(identity)),
                       "request": classes["request"](**_present(request)),
                       "time": classes["time"](**_present(time))}
        for name, given in (("pii", pii), ("answer", answer)):
            if given is not None and name in scope:
                self.values[name] = classes[name](**_present(given))
        self.plain: dict[str, dict[str, Any] | None] = {
            "identity": dict(identity), "request": dict(request), "time": dict(time),
            "pii": dict(pii) if pii is not None else None, "answer": dict(answer) if answer is not None else None}
        self._activation = _env(scope).Activation(self.values)

    def with_pii(self, pii: Mapping[str, Any]) -> Facts:
        return Facts(self.plain["identity"] or {}, self.plain["request"] or {}, self.plain["time"] or {}, pii)

    def for_answers(self, answer: Mapping[str, Any] | None = None) -> Facts:
        """The same caller, request and time for answer rules' conditions, with ``answer`` (once it is known)."""
        return Facts(self.plain["identity"] or {}, self.plain["request"] or {}, self.plain["time"] or {},
                     answer=answer, scope=ANSWER)

    def evaluate(self, program: Any) -> Any:
        """``program``'s result as a Python value. Raises ``EvaluationError``."""
        result = program.eval(self._activation)
        if result.type() == cel.Type.ERROR:
            raise EvaluationError(_first_line(RuntimeError(str(result.value()))))
        return result.plain_value()


def _present(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
