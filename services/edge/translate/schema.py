"""JSON Schema (as OpenAI clients write it) → Gemini's OpenAPI-subset `Schema`.

Choice: tool parameters go out as `functionDeclarations[].parameters` and structured output as
`generationConfig.responseSchema`, both cleaned here by a whitelist, rather than passed through
as `parametersJsonSchema` / `responseJsonSchema`. The OpenAPI subset is accepted by every Gemini
backend (Code Assist, AI Studio, Vertex), whereas what each backend tolerates inside the JSON
Schema fields differs and fails with an opaque 400. A whitelist also survives the keywords that
client libraries keep adding (`$schema`, `strict`, `additionalProperties`, `examples`, …).

What the conversion does:
* keeps type, format (only the ones Gemini knows), description, nullable, enum (strings),
  properties, required (restricted to declared properties), items, min/maxItems,
  minimum/maximum, anyOf; drops everything else;
* inlines local `$ref`s (`#/$defs/X`, `#/definitions/X`); a recursive reference stops at an
  untyped object instead of looping;
* merges `allOf`, treats `oneOf` as `anyOf`, turns `const` into a one-value enum;
* `"type": [..., "null"]` and `anyOf` branches of `{"type": "null"}` become `nullable: true`;
* a non-string enum (Gemini's enum is strings only) is dropped and its values are listed in the
  description, so the model still sees them.

Bounded work: inlining `$ref`s (and splitting `"type": [...]`, merging `allOf`) can multiply a
small schema exponentially (30 `$defs`, each referring twice to the next, is 2^30 nodes from
2.5 KB). Every node produced, every dict copied and every enum value or description byte
copied is charged to a `SchemaBudget` shared by all schemas of one request; past it the request
is refused with `schema_too_complex` before much work is done. The caps are far above what
real tool sets need (a few hundred nodes per tool) and keep the worst accepted request to tens
of milliseconds of CPU (`make bench` prints it).
"""
from __future__ import annotations

from typing import Any

from .errors import TranslationError

_KNOWN_FORMATS = {
    "string": {"enum", "date-time"},
    "number": {"float", "double"},
    "integer": {"int32", "int64"},
}
_TYPES = {"string", "number", "integer", "boolean", "array", "object", "null"}
_PASS_NUMBERS = ("minItems", "maxItems", "minimum", "maximum")
_MAX_DEPTH = 64
# Per request, over all its schemas: nodes cleaned plus entries copied, and string bytes copied.
MAX_SCHEMA_NODES = 20_000
MAX_SCHEMA_BYTES = 4 * 1024 * 1024
_MAX_REF = 1024


class SchemaBudget:
    """The work all schemas of one request may still cost (see the module docstring)."""

    __slots__ = ("nodes", "bytes")

    def __init__(self, nodes: int = MAX_SCHEMA_NODES, size: int = MAX_SCHEMA_BYTES) -> None:
        self.nodes = nodes
        self.bytes = size

    def charge(self, param: str, nodes: int, size: int = 0) -> None:
        self.nodes -= nodes
        self.bytes -= size
        if self.nodes < 0 or self.bytes < 0:
            raise TranslationError(
                f"{param} is too complex: expanding its $refs, allOf and type lists would exceed "
                f"{MAX_SCHEMA_NODES} schema nodes or {MAX_SCHEMA_BYTES // 1024} KiB of text in this request; "
                "simplify the schemas or define shared parts once", param, code="schema_too_complex")


def to_gemini_schema(schema: Any, *, param: str, ordered: bool = False, budget: SchemaBudget | None = None) -> dict:
    """Clean one schema. `ordered` adds `propertyOrdering` (structured output keeps the client's
    key order that way; Gemini otherwise orders keys alphabetically). `budget` is shared by the
    schemas of one request; without it the schema gets a budget of its own."""
    if not isinstance(schema, dict):
        raise TranslationError(f"{param} must be a JSON Schema object", param)
    return _Cleaner(schema, param, ordered, budget or SchemaBudget()).clean(schema, 0, ())


class _Cleaner:
    def __init__(self, root: dict, param: str, ordered: bool, budget: SchemaBudget) -> None:
        self.root = root
        self.param = param
        self.ordered = ordered
        self.budget = budget

    def _charge(self, nodes: int, size: int = 0) -> None:
        self.budget.charge(self.param, nodes, size)

    def _resolve(self, ref: str) -> dict | None:
        if len(ref) > _MAX_REF:
            raise TranslationError(f"{self.param} has a $ref longer than {_MAX_REF} characters", self.param)
        self._charge(1, len(ref))
        for prefix in ("#/$defs/", "#/definitions/"):
            if ref.startswith(prefix):
                found = self.root
                for key in (prefix[2:-1], *ref[len(prefix):].split("/")):
                    found = found.get(key.replace("~1", "/").replace("~0", "~")) if isinstance(found, dict) else None
                return found if isinstance(found, dict) else None
        if ref == "#":
            return self.root
        return None

    def clean(self, node: Any, depth: int, refs: tuple[str, ...]) -> dict:
        if depth > _MAX_DEPTH:
            raise TranslationError(f"{self.param} is nested too deeply", self.param)
        if node is True or node is None:
            return {}
        if not isinstance(node, dict):
            raise TranslationError(f"{self.param} contains a schema that is not an object", self.param)
        self._charge(1)

        ref = node.get("$ref")
        if isinstance(ref, str):
            target = self._resolve(ref)
            if target is None:
                raise TranslationError(f"{self.param}: cannot resolve $ref {ref!r} (only local #/$defs refs are supported)", self.param)
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            self._charge(len(target) + len(node))
            if ref in refs:
                out: dict = {"type": "object"}
                if isinstance(siblings.get("description"), str):
                    out["description"] = siblings["description"]
                return out
            return self.clean({**target, **siblings}, depth + 1, (*refs, ref))

        all_of = node.get("allOf")
        if isinstance(all_of, list) and all_of:
            merged = {k: v for k, v in node.items() if k != "allOf"}
            for sub in all_of:
                sub = self._expand(sub, refs)
                # _merge copies what it has merged so far: charged, or allOf would be quadratic.
                self._charge(len(merged) + len(sub) + _size(merged.get("properties")) + _size(sub.get("properties"))
                             + _size(merged.get("required")) + _size(sub.get("required")))
                merged = _merge(merged, sub)
            return self.clean(merged, depth + 1, refs)

        out = {}
        nullable = node.get("nullable") is True

        types = node.get("type")
        if isinstance(types, list):
            names = [t for t in types if isinstance(t, str)]
            if "null" in names:
                nullable = True
                names = [t for t in names if t != "null"]
            if len(names) > 1:
                self._charge(len(names) * len(node))
                branches = [self.clean({**_without(node, "type"), "type": t}, depth + 1, refs) for t in names]
                out = {"anyOf": branches}
                if nullable:
                    out["nullable"] = True
                return out
            types = names[0] if names else None
        if isinstance(types, str):
            t = types.lower()
            if t == "null":
                return {"nullable": True}
            if t in _TYPES:
                out["type"] = t

        branches_src = node.get("anyOf") if isinstance(node.get("anyOf"), list) else node.get("oneOf")
        if isinstance(branches_src, list):
            real = []
            for sub in branches_src:
                if isinstance(sub, dict) and sub.get("type") == "null" and len(sub) == 1:
                    nullable = True
                else:
                    real.append(sub)
            if len(real) == 1:
                # `anyOf: [X, null]` is how Pydantic spells Optional[X]: collapse to X, nullable.
                out = {**self.clean(real[0], depth + 1, refs), **out}
            elif real:
                out["anyOf"] = [self.clean(sub, depth + 1, refs) for sub in real]

        if isinstance(node.get("description"), str):
            out["description"] = node["description"]
            self._charge(0, len(node["description"]))

        enum = node.get("enum")
        if "const" in node and enum is None:
            enum = [node["const"]]
        if isinstance(enum, list):
            self._charge(len(enum))
            self._charge(0, sum(len(v) for v in enum if isinstance(v, str)))
            values = [v for v in enum if v is not None]
            if len(values) < len(enum):
                nullable = True
            if values and all(isinstance(v, str) for v in values):
                out["enum"] = values
                out.setdefault("type", "string")
            elif values:
                hint = "Allowed values: " + ", ".join(_show(v) for v in values)
                self._charge(0, len(hint))
                out["description"] = f"{out['description']} ({hint})" if out.get("description") else hint

        fmt = node.get("format")
        if isinstance(fmt, str) and fmt in _KNOWN_FORMATS.get(out.get("type", ""), ()):
            out["format"] = fmt

        props = node.get("properties")
        if isinstance(props, dict):
            cleaned = {str(k): self.clean(v, depth + 1, refs) for k, v in props.items()}
            if cleaned:
                out["properties"] = cleaned
                out.setdefault("type", "object")
                required = node.get("required")
                if isinstance(required, list):
                    self._charge(len(required))
                    req = [r for r in required if isinstance(r, str) and r in cleaned]
                    if req:
                        out["required"] = list(dict.fromkeys(req))
                if self.ordered and len(cleaned) > 1:
                    out["propertyOrdering"] = list(cleaned)

        items = node.get("items")
        if isinstance(items, list):  # draft-4 tuple form: the first item schema is the best we can say
            items = items[0] if items else None
        if items is None and isinstance(node.get("prefixItems"), list) and node["prefixItems"]:
            items = node["prefixItems"][0]
        if isinstance(items, dict) or items is True:
            out["items"] = self.clean(items, depth + 1, refs)
            out.setdefault("type", "array")
        elif out.get("type") == "array":
            out["items"] = {}

        for key in _PASS_NUMBERS:
            value = node.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 2**53:
                out[key] = value

        if nullable:
            out["nullable"] = True
        return out

    def _expand(self, sub: Any, refs: tuple[str, ...]) -> dict:
        if isinstance(sub, dict) and isinstance(sub.get("$ref"), str) and sub["$ref"] not in refs:
            target = self._resolve(sub["$ref"])
            if target is not None:
                self._charge(len(target) + len(sub))
                return {**target, **{k: v for k, v in sub.items() if k != "$ref"}}
        return sub if isinstance(sub, dict) else {}


def _without(node: dict, key: str) -> dict:
    return {k: v for k, v in node.items() if k != key}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        if key == "properties" and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        elif key == "required" and isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = [*out[key], *value]
        else:
            out.setdefault(key, value)
    return out


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (dict, list)) else 0


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
