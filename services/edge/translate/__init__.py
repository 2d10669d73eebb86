"""OpenAI ⇄ Gemini translation: pure functions, no I/O (see each module's docstring)."""
from .errors import TranslationError
from .gemini_to_openai import ChunkTranslator, completion_from_gemini, finish_reason, usage_to_openai
from .openai_to_gemini import ChatRequest, chat_request_to_gemini, media_urls
from .thinking import ThinkingSpec, split_model, thinking_config

__all__ = [
    "ChatRequest",
    "ChunkTranslator",
    "ThinkingSpec",
    "TranslationError",
    "chat_request_to_gemini",
    "completion_from_gemini",
    "finish_reason",
    "media_urls",
    "split_model",
    "thinking_config",
    "usage_to_openai",
]
