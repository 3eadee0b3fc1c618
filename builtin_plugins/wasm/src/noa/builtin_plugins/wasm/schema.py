"""A small JSON Schema subset, validated here so manifests need no extra dependency.

Supported keywords: ``type`` (a name or a list of names: object, array, string, integer,
number, boolean, null), ``properties``, ``required``, ``additionalProperties`` (a
boolean), ``items``, ``enum``, ``minimum``, ``maximum``, ``minLength``, ``maxLength``,
``minItems``, ``maxItems``. Any other keyword makes the schema invalid, so a manifest
never silently relies on a check that does not run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_schema", "validate"]

_TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}
_KEYWORDS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "description",
    "title",
}


def check_schema(schema: Any, where: str = "$") -> None:
    """Raise ValueError naming the place of the first unsupported or malformed keyword."""
    if not isinstance(schema, dict):
        raise ValueError(f"{where}: a schema is a table")
    unknown = sorted(set(schema) - _KEYWORDS)
    if unknown:
        raise ValueError(f"{where}: unsupported keyword(s) {', '.join(unknown)}")
    kinds = schema.get("type")
    names = [kinds] if isinstance(kinds, str) else kinds
    if kinds is not None and (not isinstance(names, list) or not names or not set(names) <= _TYPES):
        raise ValueError(f"{where}.type: one of {sorted(_TYPES)} or a list of them")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise ValueError(f"{where}.properties: a table of schemas")
    for name, sub in properties.items():
        check_schema(sub, f"{where}.properties.{name}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ValueError(f"{where}.required: a list of property names")
    if not isinstance(schema.get("additionalProperties", True), bool):
        raise ValueError(f"{where}.additionalProperties: true or false")
    if "items" in schema:
        check_schema(schema["items"], f"{where}.items")
    if "enum" in schema and not isinstance(schema["enum"], list):
        raise ValueError(f"{where}.enum: a list of values")


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def validate(value: Any, schema: dict[str, Any], where: str = "$") -> str | None:
    """The first place where ``value`` fails ``schema`` and why, or None when it passes."""
    actual = _type_of(value)
    kinds = schema.get("type")
    if kinds is not None:
        allowed = {kinds} if isinstance(kinds, str) else set(kinds)
        if "number" in allowed:
            allowed.add("integer")
        if actual not in allowed:
            return f"{where}: expected {' or '.join(sorted(allowed))}, got {actual}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where}: not one of {schema['enum']!r}"
    if actual in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{where}: less than {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{where}: more than {schema['maximum']}"
    if actual == "string":
        if len(value) < schema.get("minLength", 0):
            return f"{where}: shorter than {schema['minLength']}"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{where}: longer than {schema['maxLength']}"
    if actual == "array":
        if len(value) < schema.get("minItems", 0):
            return f"{where}: fewer than {schema['minItems']} items"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{where}: more than {schema['maxItems']} items"
        if "items" in schema:
            for i, item in enumerate(value):
                problem = validate(item, schema["items"], f"{where}[{i}]")
                if problem:
                    return problem
    if actual == "object":
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                return f"{where}: missing required property {name!r}"
        for name, item in value.items():
            if name in properties:
                problem = validate(item, properties[name], f"{where}.{name}")
                if problem:
                    return problem
            elif schema.get("additionalProperties", True) is False:
                return f"{where}: unexpected property {name!r}"
    return None
