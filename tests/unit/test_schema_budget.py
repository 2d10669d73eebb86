"""Schema cleaning does bounded work: every way of multiplying a small schema is charged to one
budget per request and refused with schema_too_complex (issue #10 item 1)."""
from __future__ import annotations

import pytest

from services.edge.translate import TranslationError, chat_request_to_gemini
from services.edge.translate.schema import MAX_SCHEMA_NODES, SchemaBudget, to_gemini_schema


def fan_out(depth: int) -> dict:
    """`depth` $defs, each referring twice to the next: 2^depth nodes once inlined."""
    defs = {f"d{i}": {"type": "object", "properties": {"a": {"$ref": f"#/$defs/d{i + 1}"},
                                                       "b": {"$ref": f"#/$defs/d{i + 1}"}}} for i in range(depth)}
    defs[f"d{depth}"] = {"type": "string", "description": "leaf"}
    return {"type": "object", "$defs": defs, "properties": {"x": {"$ref": "#/$defs/d0"}}}


def type_lists(depth: int) -> dict:
    """Each level splits into three branches, each cleaning the whole level below."""
    node: dict = {"type": "string"}
    for _ in range(depth):
        node = {"type": ["string", "number", "object"], "properties": {"p": node}}
    return {"type": "object", "properties": {"root": node}}


def all_of_chain(n: int) -> dict:
    """n allOf parts of 1000 properties each: merging them one by one copies what is merged so far."""
    parts = [{"properties": {f"p{i}_{j}": {"type": "string"} for j in range(1000)}} for i in range(n)]
    return {"type": "object", "allOf": parts}


def long_enum_behind_refs(depth: int) -> dict:
    schema = fan_out(depth)
    schema["$defs"][f"d{depth}"] = {"type": "string", "enum": [f"v{i}" for i in range(500)]}
    return schema


def long_description_behind_refs(depth: int) -> dict:
    schema = fan_out(depth)
    schema["$defs"][f"d{depth}"] = {"type": "string", "description": "x" * 100_000}
    return schema


@pytest.mark.parametrize("schema", [
    fan_out(30), fan_out(16), type_lists(12), all_of_chain(60), long_enum_behind_refs(8),
    long_description_behind_refs(7),
], ids=["fan-out-30", "fan-out-16", "type-lists", "allOf-chain", "enum-behind-refs", "description-behind-refs"])
def test_amplifying_schemas_are_refused(schema: dict) -> None:
    with pytest.raises(TranslationError) as err:
        to_gemini_schema(schema, param="tools[0].function.parameters")
    assert err.value.code == "schema_too_complex"
    assert err.value.param == "tools[0].function.parameters"


@pytest.mark.parametrize("schema", [fan_out(6), type_lists(3), all_of_chain(3)],
                         ids=["fan-out-6", "type-lists-3", "allOf-3"])
def test_modest_sharing_still_works(schema: dict) -> None:
    out = to_gemini_schema(schema, param="p")
    assert out["type"] == "object" and out["properties"]


def test_a_long_ref_is_refused() -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/" + "a" * 5000}}}
    with pytest.raises(TranslationError, match="longer than"):
        to_gemini_schema(schema, param="p")


def test_the_budget_is_shared_by_every_schema_of_a_request() -> None:
    # Each tool alone fits its own budget; all of them together do not.
    one = fan_out(9)
    assert to_gemini_schema(one, param="p", budget=SchemaBudget())
    tools = [{"type": "function", "function": {"name": f"f{i}", "parameters": one}} for i in range(40)]
    body = {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}], "tools": tools}
    with pytest.raises(TranslationError) as err:
        chat_request_to_gemini(body)
    assert err.value.code == "schema_too_complex"


def test_response_format_shares_the_budget() -> None:
    body = {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": fan_out(25)}}}
    with pytest.raises(TranslationError) as err:
        chat_request_to_gemini(body)
    assert err.value.code == "schema_too_complex"
    assert err.value.param == "response_format.json_schema.schema"


def test_budget_counts_nodes() -> None:
    budget = SchemaBudget()
    to_gemini_schema({"type": "object", "properties": {"a": {"type": "string"}}}, param="p", budget=budget)
    assert 0 < MAX_SCHEMA_NODES - budget.nodes < 10
