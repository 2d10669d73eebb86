"""Which models are embedding models: the upstream's catalogue says so in ListModels
(`Model.embedding`), and the edge's model lists follow it (no second rule in the edge)."""
from __future__ import annotations

import pytest

from gemini_cli.upstream.v1 import upstream_pb2 as pb
from services.edge import catalog as edge_catalog
from services.upstream.catalog import ALL_KINDS, BUILTIN, CLOUD, build_catalog


def test_builtin_embedding_models_are_marked() -> None:
    sent = {m.id: m.to_proto() for m in BUILTIN}
    assert sent["gemini-embedding-001"].embedding and sent["text-embedding-005"].embedding
    assert not sent["gemini-2.5-pro"].embedding


@pytest.mark.parametrize(("entry", "embedding"), [
    ("gemini-embedding-2", True),
    ({"id": "text-multilingual-embedding-002"}, True),
    ({"id": "my-embedder", "embedding": True}, True),
    ({"id": "gemini-embedding-exp", "embedding": False}, False),
    ("gemini-9-flash", False),
])
def test_models_entries_can_be_embedding_models(entry, embedding: bool) -> None:
    info = build_catalog([entry])[-1]
    assert info.embedding is embedding and info.to_proto().embedding is embedding
    # Embedding models are served by AI Studio and Vertex AI members only.
    assert info.kinds == (CLOUD if embedding else ALL_KINDS)


def test_edge_lists_follow_the_flag() -> None:
    embedder = pb.Model(id="my-embedder", display_name="Mine", input_token_limit=2048, output_token_limit=1,
                        embedding=True)
    chat = pb.Model(id="gemini-2.5-pro", display_name="Gemini 2.5 Pro", thinking=pb.ThinkingRange(max_budget=32768))
    listed = {m["name"]: m for m in edge_catalog.google_list([embedder, chat])["models"]}
    assert listed["models/my-embedder"]["supportedGenerationMethods"] == ["embedContent", "batchEmbedContents"]
    assert "thinking" not in listed["models/my-embedder"]
    assert listed["models/gemini-2.5-pro"]["supportedGenerationMethods"] == ["generateContent",
                                                                            "streamGenerateContent", "countTokens"]
    assert listed["models/gemini-2.5-pro"]["thinking"] is True
    assert edge_catalog.openai_ids(embedder) == ["my-embedder"]
