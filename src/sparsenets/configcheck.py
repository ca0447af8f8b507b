"""One line for a config that breaks the schema: the key, the bad value and what is allowed.

Snakemake's own `validate` prints the failing schema and, for a stray top-level key, the whole config:
hundreds of lines in which the key is hard to find. The Snakefile runs it (it fills in the defaults) and,
when it fails, raises `ConfigError(explain(...))` instead.
"""
from __future__ import annotations

import os
from typing import Any

import yaml

NESTED_STRINGS = ("a value inside a --config dict arrives as a string (e.g. '1.5', not 1.5): "
                  "put such a change in a file and pass it with --configfile")


class ConfigError(ValueError):
    """The config breaks the schema; the message names the key, the value and what is allowed."""


def explain(config: dict[str, Any], schema_file: str | os.PathLike) -> str | None:
    """The most relevant schema error of `config` as one short message, or None if it is valid."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    with open(schema_file, encoding="utf-8") as f:
        schema = yaml.safe_load(f)
    error = best_match(Draft202012Validator(schema).iter_errors(config))
    return None if error is None else describe(error)


def describe(error: Any) -> str:
    """`config key 'a.b.c': <what is wrong>; <what is allowed>` for one jsonschema ValidationError."""
    path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    value, schema, kind = error.instance, error.schema, error.validator
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed))
        where = f"{path}." if error.absolute_path else ""
        return (f"config key '{where}{extra[0] if extra else '?'}' is not a known key; "
                f"allowed keys{' in ' + path if error.absolute_path else ''}: {', '.join(allowed)}")
    if kind in ("enum", "const"):
        allowed = schema.get("enum", [schema.get("const")])
        return f"config key '{path}': {value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}"
    if kind == "type":
        hint = f" ({NESTED_STRINGS})" if isinstance(value, str) and _number_like(value) else ""
        return f"config key '{path}': {_short(repr(value))} is a {type(value).__name__}, not {error.validator_value}{hint}"
    if kind == "pattern":
        return f"config key '{path}': {value!r} does not match the allowed pattern {error.validator_value}"
    return f"config key '{path}': {_short(error.message)}"


def _number_like(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit] + " ..."
