"""The Gemini model ids each simulated backend knows."""
from __future__ import annotations

# Code Assist's ids (it knows gemini-3-flash where the CLI says gemini-3.5-flash).
KNOWN_MODELS = (
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-3-pro-preview",
    "gemini-3-flash-preview",
    "gemini-3.1-pro-preview",
    "gemini-3.1-pro-preview-customtools",
    "gemini-3-flash",
    "gemini-3.1-flash-lite",
)
# AI Studio and Vertex AI ids.
CLOUD_MODELS = tuple(m for m in KNOWN_MODELS if m != "gemini-3-flash") + ("gemini-3.5-flash",)
EMBEDDING_MODELS = {"gemini-embedding-001": 3072, "text-embedding-005": 768, "gemini-embedding-2": 3072}


def is_gemini3(model: str) -> bool:
    return model.startswith("gemini-3")
