"""The pieces of a Gemini GenerateContentRequest that every request translator (chat
completions, Responses, Anthropic Messages) builds the same way (pure)."""
from __future__ import annotations

from .errors import TranslationError
from .openai_tools import tool_config
from .params import number
from .signatures import ensure_first_call_signed
from .thinking import ThinkingSpec


def conversation_request(contents: list[dict], system: list[dict], spec: ThinkingSpec) -> dict:
    """A request of the contents and system instruction; for a thinking model (Gemini 3), the
    first function call of each model turn carries a thought signature."""
    if spec.levels:
        ensure_first_call_signed(contents)
    gemini: dict = {"contents": contents}
    if system:
        gemini["systemInstruction"] = {"parts": system}
    return gemini


def add_tools(gemini: dict, declarations: list[dict], builtins: list[dict], choice: dict) -> None:
    """`tools` and `toolConfig`, the declarations narrowed as the tool choice says (`choice`: the
    request members tool_config reads, in OpenAI's terms)."""
    calling, keep = tool_config(choice, declarations)
    if keep is not None:
        declarations = [d for d in declarations if d["name"] in keep]
    tools = ([{"functionDeclarations": declarations}] if declarations else []) + builtins
    if tools:
        gemini["tools"] = tools
    if calling:
        gemini["toolConfig"] = {"functionCallingConfig": calling}


def add_sampling(body: dict, gen: dict) -> None:
    """temperature and top_p, which the three APIs name alike."""
    for key, target in (("temperature", "temperature"), ("top_p", "topP")):
        value = number(body, key)
        if value is not None:
            gen[target] = value


def add_generation(gemini: dict, gen: dict, thinking: dict | None) -> None:
    """`generationConfig`, with the thinking config in it, unless there is nothing to say."""
    if thinking:
        gen["thinkingConfig"] = thinking
    if gen:
        gemini["generationConfig"] = gen


def stream_flag(body: dict) -> bool:
    """`stream`: absent is false, anything but a boolean (null included) is refused."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise TranslationError("stream must be a boolean", "stream")
    return stream
