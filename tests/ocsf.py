"""Validation against the OCSF schema itself, offline: the ``ocsf-json-schema`` package ships the schema's own
export (classes, objects, their attributes, requirements and types) for each OCSF version and turns a class into a
JSON Schema (draft 2020-12), which ``jsonschema`` checks an event against."""

from __future__ import annotations

import functools
from typing import Any

import jsonschema
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

from addons.siem.ocsf import OCSF_VERSION


@functools.cache
def _schema() -> OcsfJsonSchemaEmbedded:
    return OcsfJsonSchemaEmbedded(get_ocsf_schema(version=OCSF_VERSION))


@functools.cache
def _validator(class_uid: int) -> jsonschema.Draft202012Validator:
    schema = _schema()
    return jsonschema.Draft202012Validator(schema.get_class_schema(schema.lookup_class_name_from_uid(class_uid)))


def ocsf_errors(event: dict[str, Any]) -> list[str]:
    """Every way ``event`` breaks the OCSF schema of its class (empty: it validates)."""
    validator = _validator(event["class_uid"])
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(event)]
