"""Tool and response schemas: JSON Schema as clients write it → Gemini's OpenAPI-subset Schema."""
from __future__ import annotations

import pytest

from services.edge.translate import TranslationError
from services.edge.translate.schema import to_gemini_schema

CASES = {
    "strict-openai-tool": (
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "strict": True,
         "additionalProperties": False, "title": "Args",
         "properties": {"city": {"type": "string", "description": "City", "default": "Paris", "examples": ["Rome"],
                                 "minLength": 1, "pattern": "^[A-Z]"},
                        "days": {"type": "integer", "exclusiveMinimum": 0, "maximum": 14, "format": "int32"}},
         "required": ["city", "ghost"]},
        {"type": "object",
         "properties": {"city": {"type": "string", "description": "City"},
                        "days": {"type": "integer", "maximum": 14, "format": "int32"}},
         "required": ["city"]},
    ),
    "unknown-formats-dropped": (
        {"type": "object", "properties": {"email": {"type": "string", "format": "email"},
                                          "when": {"type": "string", "format": "date-time"},
                                          "uri": {"type": "string", "format": "uri"},
                                          "ratio": {"type": "number", "format": "double"}}},
        {"type": "object", "properties": {"email": {"type": "string"}, "when": {"type": "string", "format": "date-time"},
                                          "uri": {"type": "string"}, "ratio": {"type": "number", "format": "double"}}},
    ),
    "nullable-type-list": (
        {"type": "object", "properties": {"note": {"type": ["string", "null"]}}},
        {"type": "object", "properties": {"note": {"type": "string", "nullable": True}}},
    ),
    "multi-type-list": (
        {"type": "object", "properties": {"v": {"type": ["string", "integer"], "description": "d"}}},
        {"type": "object", "properties": {"v": {"anyOf": [{"type": "string", "description": "d"}, {"type": "integer", "description": "d"}]}}},
    ),
    "pydantic-optional": (
        {"type": "object", "properties": {"limit": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None, "title": "Limit"}}},
        {"type": "object", "properties": {"limit": {"type": "integer", "nullable": True}}},
    ),
    "refs-inlined": (
        {"type": "object", "$defs": {"Unit": {"type": "string", "enum": ["c", "f"]},
                                     "Place": {"type": "object", "properties": {"name": {"type": "string"}, "unit": {"$ref": "#/$defs/Unit"}}}},
         "properties": {"place": {"$ref": "#/$defs/Place", "description": "where"}, "units": {"type": "array", "items": {"$ref": "#/definitions/U"}}},
         "definitions": {"U": {"type": "string"}}},
        {"type": "object", "properties": {
            "place": {"type": "object", "description": "where",
                      "properties": {"name": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}}},
            "units": {"type": "array", "items": {"type": "string"}}}},
    ),
    "recursive-ref-stops": (
        {"type": "object", "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}, "v": {"type": "integer"}}}},
         "properties": {"root": {"$ref": "#/$defs/Node"}}},
        {"type": "object", "properties": {"root": {"type": "object", "properties": {"child": {"type": "object"}, "v": {"type": "integer"}}}}},
    ),
    "allOf-merged": (
        {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                   {"properties": {"b": {"type": "boolean"}}, "required": ["b"]}]},
        {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "boolean"}}, "required": ["a", "b"]},
    ),
    "oneOf-as-anyOf": (
        {"type": "object", "properties": {"x": {"oneOf": [{"type": "string"}, {"type": "number"}]}}},
        {"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}, {"type": "number"}]}}},
    ),
    "const-and-number-enum": (
        {"type": "object", "properties": {"kind": {"const": "fixed"}, "level": {"type": "integer", "enum": [1, 2, 3], "description": "Level"}}},
        {"type": "object", "properties": {"kind": {"type": "string", "enum": ["fixed"]},
                                          "level": {"type": "integer", "description": "Level (Allowed values: 1, 2, 3)"}}},
    ),
    "enum-with-null": (
        {"type": "object", "properties": {"u": {"type": ["string", "null"], "enum": ["a", "b", None]}}},
        {"type": "object", "properties": {"u": {"type": "string", "enum": ["a", "b"], "nullable": True}}},
    ),
    "arrays": (
        {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 5, "uniqueItems": True},
                                          "pair": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "number"}]},
                                          "any": {"type": "array"}}},
        {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 5},
                                          "pair": {"type": "array", "items": {"type": "number"}},
                                          "any": {"type": "array", "items": {}}}},
    ),
    "uppercase-types-normalised": (
        {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}},
        {"type": "object", "properties": {"a": {"type": "string"}}},
    ),
    "free-form-object": (
        {"type": "object", "properties": {"meta": {"type": "object", "additionalProperties": {"type": "string"}}}},
        {"type": "object", "properties": {"meta": {"type": "object"}}},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_clean_schema(name: str) -> None:
    source, expected = CASES[name]
    assert to_gemini_schema(source, param="p") == expected


def test_ordered_adds_property_ordering() -> None:
    got = to_gemini_schema({"type": "object", "properties": {"z": {"type": "string"}, "a": {"type": "object",
                            "properties": {"y": {"type": "string"}, "b": {"type": "string"}}}}}, param="p", ordered=True)
    assert got["propertyOrdering"] == ["z", "a"]
    assert got["properties"]["a"]["propertyOrdering"] == ["y", "b"]


@pytest.mark.parametrize(
    "schema",
    ["object", {"type": "object", "properties": {"a": {"$ref": "https://example.com/schema.json"}}},
     {"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}, {"type": "object", "properties": {"a": 5}}],
)
def test_bad_schemas(schema) -> None:
    with pytest.raises(TranslationError) as info:
        to_gemini_schema(schema, param="tools[0].function.parameters")
    assert info.value.param == "tools[0].function.parameters"


def test_deep_schema_is_refused_not_crashing() -> None:
    deep: dict = {"type": "string"}
    for _ in range(200):
        deep = {"type": "object", "properties": {"x": deep}}
    with pytest.raises(TranslationError, match="nested too deeply"):
        to_gemini_schema(deep, param="p")
