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


def to_gemini_schema(schema: Any, *, param: str, ordered: bool = False) -> dict:
    """Clean one schema. `ordered` adds `propertyOrdering` (structured output keeps the client's
    key order that way; Gemini otherwise orders keys alphabetically)."""
    if not isinstance(schema, dict):
        raise TranslationError(f"{param} must be a JSON Schema object", param)
    return _Cleaner(schema, param, ordered).clean(schema, 0, ())


class _Cleaner:
    def __init__(self, root: dict, param: str, ordered: bool) -> None:
        self.root = root
        self.param = param
        self.ordered = ordered

    def _resolve(self, ref: str) -> dict | None:
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

        ref = node.get("$ref")
        if isinstance(ref, str):
            target = self._resolve(ref)
            if target is None:
                raise TranslationError(f"{self.param}: cannot resolve $ref {ref!r} (only local #/$defs refs are supported)", self.param)
            siblings = {k: v for k, v in node.items() if k != "$ref"}
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
                merged = _merge(merged, self._expand(sub, refs))
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

        enum = node.get("enum")
        if "const" in node and enum is None:
            enum = [node["const"]]
        if isinstance(enum, list):
            values = [v for v in enum if v is not None]
            if len(values) < len(enum):
                nullable = True
            if values and all(isinstance(v, str) for v in values):
                out["enum"] = values
                out.setdefault("type", "string")
            elif values:
                hint = "Allowed values: " + ", ".join(_show(v) for v in values)
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


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
