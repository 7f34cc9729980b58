"""JSON Schemas (draft 2020-12) of the JSON files a bundle or fusion folder holds, and the one check that
applies them.

``bundle.json``, ``threshold.json``, ``enrolled.json``, ``scorer.json`` and ``fusion.json`` each have a
``<name>.schema.json`` here (``config.json`` has the strict ``Config`` checks instead). Every number must be
finite (``NaN`` and ``Infinity``, which Python's JSON reader accepts, are refused), a boolean is never a number
or an integer, and every list, string and size a file can set is capped. A file that does not fit is one
``BundleError`` line naming the file and the field (as a JSON path, ``'systems[0].clips[3].embedding'``).

>>> check({"value": float("nan")}, "threshold.json", "b/threshold.json")
Traceback (most recent call last):
...
sourcetrace.errors.BundleError: b/threshold.json: 'value' must be a finite number, got nan
>>> check({"value": True}, "threshold.json", "b/threshold.json")
Traceback (most recent call last):
...
sourcetrace.errors.BundleError: b/threshold.json: 'value' must be a finite number, got a boolean (true)
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from sourcetrace.errors import BundleError

SCHEMAS = ("bundle.json", "threshold.json", "enrolled.json", "scorer.json", "fusion.json")
SHOWN = 60  # characters of a value quoted in an error
MAX_JSON_BYTES = 256 << 20  # one JSON file (enrolled.json holds every enrolled clip's embedding)


def _finite_number(checker, instance) -> bool:
    return isinstance(instance, (int, float)) and not isinstance(instance, bool) and math.isfinite(instance)


def _integer(checker, instance) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


_TYPES = Draft202012Validator.TYPE_CHECKER.redefine_many({"number": _finite_number, "integer": _integer})
StrictValidator = jsonschema.validators.extend(Draft202012Validator, type_checker=_TYPES)


@functools.cache
def schema(name: str) -> dict:
    """The schema of the file ``name`` (``"threshold.json"``), checked against the metaschema once."""
    if name not in SCHEMAS:
        raise KeyError(f"no schema for {name!r}; schemas: {', '.join(SCHEMAS)}")
    stem = name.removesuffix(".json")
    text = resources.files(__name__).joinpath(f"{stem}.schema.json").read_text(encoding="utf-8")
    loaded = json.loads(text)
    StrictValidator.check_schema(loaded)
    return loaded


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    return StrictValidator(schema(name))


def field(path: Iterable[Any]) -> str:
    """A JSON path as a field name: ``systems[0].clips[3].embedding``; the whole file is ``(top level)``.

    >>> field(["systems", 0, "clips", 3, "embedding"])
    'systems[0].clips[3].embedding'
    """
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _quote(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        kind = "a list" if isinstance(value, list) else "an object"
        return f"{kind} of {len(value)} item{'s' if len(value) != 1 else ''}"
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


_TYPE_WORDS = {
    "number": "a finite number",
    "integer": "an integer",
    "string": "a string",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "null",
}


def _explain(err: jsonschema.ValidationError) -> str:
    """One sentence for ``err`` (jsonschema's own messages quote whole values, which can be megabytes)."""
    key, want, value = err.validator, err.validator_value, err.instance
    where = f"'{field(err.absolute_path)}'" if err.absolute_path else field(())
    if key == "type":
        kinds = [want] if isinstance(want, str) else list(want)
        return f"{where} must be {' or '.join(_TYPE_WORDS.get(k, k) for k in kinds)}, got {_quote(value)}"
    if key == "required":
        missing = [k for k in want if isinstance(value, dict) and k not in value]
        return f"{where}: missing {', '.join(repr(k) for k in missing)}"
    if key == "const":
        return f"{where} must be {json.dumps(want)}, got {_quote(value)}"
    if key == "enum":
        return f"{where} must be one of {', '.join(json.dumps(w) for w in want)}, got {_quote(value)}"
    if key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
        return f"{where}={_quote(value)} is out of range: it must be {words[key]} {want}"
    if key in ("maxItems", "maxProperties", "maxLength"):
        return f"{where} has {len(value)} {'characters' if key == 'maxLength' else 'items'}; at most {want} allowed"
    if key in ("minItems", "minProperties", "minLength"):
        return f"{where} has {len(value)} {'characters' if key == 'minLength' else 'items'}; at least {want} needed"
    if key == "additionalProperties" and want is False:
        extra = sorted(set(value) - set(err.schema.get("properties", {})))[:5]
        return f"{where}: unexpected key(s) {', '.join(repr(k)[:SHOWN] for k in extra)}"
    if key == "pattern":
        return f"{where}={_quote(value)} does not match {want}"
    first = err.message.splitlines()[0] if err.message else key
    return f"{where}: {first[:200]}"


def check(obj: Any, name: str, path: Any) -> Any:
    """``obj`` (the parsed JSON of the file ``name`` at ``path``) if it fits its schema, else one ``BundleError``
    naming ``path`` and the field."""

    try:
        err = next(_validator(name).iter_errors(obj), None)  # the first: a hostile file may hold millions
    except RecursionError:
        raise BundleError(f"{path}: nested too deeply to be a {name}") from None
    if err is not None:
        raise BundleError(f"{path}: {_explain(err)}")
    return obj


def parse_json(path: Path, name: str | None = None, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON of the regular file ``path``, at most ``max_bytes``; with ``name`` (a file that has a schema
    here) checked against it. Every failure is one ``BundleError`` naming the
    file: too big, not UTF-8, not JSON, nested too deeply, or (with ``name``) the field that does not fit."""
    size = path.stat().st_size
    if size > max_bytes:
        raise BundleError(f"{path}: {size:,} bytes, more than the {max_bytes:,} a {path.name} may have")
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise BundleError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); the file is damaged") from None
    except json.JSONDecodeError as err:
        raise BundleError(f"{path}: not valid JSON ({err}); the file is truncated or damaged") from None
    except RecursionError:
        raise BundleError(f"{path}: not valid JSON (nested too deeply); the file is damaged") from None
    except OSError as err:
        raise BundleError(f"{path}: cannot be read ({err.strerror or err})") from None
    return check(obj, name, path) if name is not None else obj
