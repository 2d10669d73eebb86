"""Thinking controls: model-name suffixes and OpenAI/Google request fields → Gemini thinkingConfig.

Sources of a thinking setting, strongest first (each field — effort and includeThoughts — is
decided by the strongest source that says something about it):

1. `extra_body.google.thinking_config` {thinking_budget | thinking_level, include_thoughts}
   (Google's own OpenAI-compatibility field);
2. the body field `thinking`: true/false, {"type": "enabled", "budget_tokens": N},
   {"type": "disabled"};
3. `reasoning_effort`: none / minimal / low / medium / high (xhigh accepted as high-or-max);
4. the model-name suffix: `-thinking` (thoughts shown, model's budget), `-nothinking` (the least
   thinking the model allows), `-maxthinking` (the most, thoughts shown).

Google's effort table is in the protocol notes (§6, §8). A model's range is not known here: it
comes from the upstream's catalogue (`ListModels` carries a `ThinkingRange` per model) and is
passed in as a `ThinkingSpec`. Gemini 2.x takes a token budget clamped to the model's range;
Gemini 3 takes a `thinkingLevel` and never both, since the backend rejects a request that sets
both. Without any source the result is None and the model's own default applies: nothing is
forced on the client.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import TranslationError

SUFFIXES = ("nothinking", "maxthinking", "thinking")  # longest first: "-nothinking" ends in "thinking"
LEVELS = ("MINIMAL", "LOW", "MEDIUM", "HIGH")
# Google's OpenAI-compatibility table (2.5 budgets); Gemini 3 levels are derived per model.
EFFORT_BUDGET = {"minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
EFFORT_LEVEL = {"none": "MINIMAL", "minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH", "xhigh": "HIGH"}
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
DYNAMIC = -1


@dataclass(frozen=True)
class ThinkingSpec:
    """What a model accepts (the upstream's ThinkingRange). `levels` set ⇒ Gemini 3 style;
    otherwise a budget range."""

    levels: tuple[str, ...] | None = None
    min_budget: int = 0
    max_budget: int = 24576
    can_disable: bool = True  # a budget of 0 turns thinking off
    default_off: bool = False  # the model does not think unless asked


# Models the catalogue gives no range for get the permissive 2.5-Flash shape, so an explicit
# request still goes through (and the backend judges it).
GENERIC = ThinkingSpec()


def split_model(name: str) -> tuple[str, str | None]:
    """"models/gemini-2.5-pro-thinking" → ("gemini-2.5-pro", "thinking"); no suffix → (name, None)."""
    if name.startswith("models/"):
        name = name[len("models/"):]
    for suffix in SUFFIXES:
        tail = "-" + suffix
        if name.endswith(tail) and len(name) > len(tail):
            return name[: -len(tail)], suffix
    return name, None


# --- effort values: ("budget", int) or ("level", str) -------------------------------------------

def _clamp_budget(spec: ThinkingSpec, budget: int) -> int:
    if budget == DYNAMIC:
        return DYNAMIC
    if budget == 0 and spec.can_disable:
        return 0
    return max(spec.min_budget or 1, min(spec.max_budget, budget))


def _round_level(spec: ThinkingSpec, level: str) -> str:
    """The nearest supported level at or above the wanted one (Google maps medium→high on 3 Pro)."""
    assert spec.levels
    want = LEVELS.index(level)
    for candidate in spec.levels:
        if LEVELS.index(candidate) >= want:
            return candidate
    return spec.levels[-1]


def _budget_to_level(budget: int) -> str | None:
    if budget == DYNAMIC:
        return None
    if budget == 0:
        return "MINIMAL"
    if budget <= 1024:
        return "LOW"
    if budget <= 8192:
        return "MEDIUM"
    return "HIGH"


def _level_to_budget(spec: ThinkingSpec, level: str) -> int:
    if level == "MINIMAL":
        return 0 if spec.can_disable else spec.min_budget
    return EFFORT_BUDGET[level.lower()]


def _lowest(spec: ThinkingSpec) -> tuple[str, int | str]:
    if spec.levels:
        return "level", spec.levels[0]
    return "budget", 0 if spec.can_disable else spec.min_budget


def _highest(spec: ThinkingSpec) -> tuple[str, int | str]:
    if spec.levels:
        return "level", spec.levels[-1]
    return "budget", spec.max_budget


def _enable(spec: ThinkingSpec) -> tuple[str, int | str] | None:
    """Thinking switched on without an amount: the model default, or dynamic where it defaults to off."""
    return ("budget", DYNAMIC) if spec.default_off and not spec.levels else None


def _budget_arg(value: object, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TranslationError(f"{param} must be an integer", param)
    if value < DYNAMIC or value > 2**31 - 1:
        raise TranslationError(f"{param} must be -1 (dynamic), 0 or a positive number of tokens", param)
    return value


def _level_arg(value: object, param: str) -> str:
    if not isinstance(value, str) or value.upper() not in LEVELS:
        raise TranslationError(f"{param} must be one of minimal, low, medium, high", param)
    return value.upper()


@dataclass
class _Choice:
    effort: tuple[str, int | str] | None = None
    effort_set: bool = False
    include: bool | None = None

    def offer(self, effort: tuple[str, int | str] | None, include: bool | None, *, effort_given: bool) -> None:
        """Record a weaker source's opinion where a stronger one has not spoken."""
        if effort_given and not self.effort_set:
            self.effort, self.effort_set = effort, True
        if include is not None and self.include is None:
            self.include = include


def _from_google(spec: ThinkingSpec, cfg: object) -> tuple[tuple[str, int | str] | None, bool, bool | None]:
    param = "extra_body.google.thinking_config"
    if not isinstance(cfg, dict):
        raise TranslationError(f"{param} must be an object", param)
    budget = cfg.get("thinking_budget", cfg.get("thinkingBudget"))
    level = cfg.get("thinking_level", cfg.get("thinkingLevel"))
    include = cfg.get("include_thoughts", cfg.get("includeThoughts"))
    if include is not None and not isinstance(include, bool):
        raise TranslationError(f"{param}.include_thoughts must be a boolean", f"{param}.include_thoughts")
    if budget is not None and level is not None:
        raise TranslationError("thinking_budget and thinking_level cannot both be set", param)
    if budget is not None:
        b = _budget_arg(budget, f"{param}.thinking_budget")
        # Google's own field: Gemini 3 accepts a budget, so it is passed rather than converted.
        return ("budget", b if spec.levels else _clamp_budget(spec, b)), True, include
    if level is not None:
        lv = _level_arg(level, f"{param}.thinking_level")
        effort = ("level", _round_level(spec, lv)) if spec.levels else ("budget", _clamp_budget(spec, _level_to_budget(spec, lv)))
        return effort, True, include
    return None, False, include


def _from_body(spec: ThinkingSpec, thinking: object) -> tuple[tuple[str, int | str] | None, bool, bool | None]:
    if isinstance(thinking, bool):
        # "On" names no amount: a weaker source (reasoning_effort, suffix) may still set one.
        return (_enable(spec), _enable(spec) is not None, True) if thinking else (_lowest(spec), True, False)
    if not isinstance(thinking, dict):
        raise TranslationError('thinking must be a boolean or an object like {"type": "enabled", "budget_tokens": 2048}', "thinking")
    kind = thinking.get("type", "enabled")
    if kind == "disabled":
        return _lowest(spec), True, False
    if kind not in ("enabled", "adaptive"):
        raise TranslationError('thinking.type must be "enabled" or "disabled"', "thinking.type")
    if thinking.get("budget_tokens") is None:
        return _enable(spec), _enable(spec) is not None, True
    budget = _budget_arg(thinking["budget_tokens"], "thinking.budget_tokens")
    if spec.levels:
        level = _budget_to_level(budget)
        return (("level", _round_level(spec, level)) if level else None), True, True
    return ("budget", _clamp_budget(spec, budget)), True, True


def _from_effort(spec: ThinkingSpec, effort: object) -> tuple[str, int | str]:
    if not isinstance(effort, str) or effort.lower() not in EFFORTS:
        raise TranslationError("reasoning_effort must be one of none, minimal, low, medium, high", "reasoning_effort")
    effort = effort.lower()
    if spec.levels:
        return "level", _round_level(spec, EFFORT_LEVEL[effort])
    if effort == "none":
        return _lowest(spec)
    if effort == "xhigh":
        return "budget", spec.max_budget
    return "budget", _clamp_budget(spec, EFFORT_BUDGET[effort])


def _from_suffix(spec: ThinkingSpec, suffix: str) -> tuple[tuple[str, int | str] | None, bool, bool | None]:
    if suffix == "thinking":
        return _enable(spec), _enable(spec) is not None, True
    if suffix == "nothinking":
        return _lowest(spec), True, None
    if suffix == "maxthinking":
        return _highest(spec), True, True
    raise ValueError(f"unknown thinking suffix {suffix!r}")


def thinking_config(
    spec: ThinkingSpec | None,
    *,
    suffix: str | None,
    reasoning_effort: str | None,
    thinking: object | None,
    extra_google: dict | None,
) -> dict | None:
    """The Gemini `generationConfig.thinkingConfig` for a request, or None for the model default.
    `spec` is the model's range from the catalogue (None: not known, GENERIC applies)."""
    if spec is None:
        spec = GENERIC
    elif not isinstance(spec, ThinkingSpec):
        raise TypeError(f"thinking_config takes the model's ThinkingSpec, not {type(spec).__name__}")
    choice = _Choice()

    google_cfg = None
    if extra_google is not None:
        if not isinstance(extra_google, dict):
            raise TranslationError("extra_body.google must be an object", "extra_body.google")
        google_cfg = extra_google.get("thinking_config", extra_google.get("thinkingConfig"))
    if google_cfg is not None:
        effort, given, include = _from_google(spec, google_cfg)
        if given and reasoning_effort is not None:
            # Google's endpoint answers 400 to this combination; so do we, with the reason.
            raise TranslationError(
                "reasoning_effort cannot be combined with extra_body.google.thinking_config thinking_budget/thinking_level",
                "reasoning_effort",
            )
        choice.offer(effort, include, effort_given=given)
    if thinking is not None:
        effort, given, include = _from_body(spec, thinking)
        choice.offer(effort, include, effort_given=given)
    if reasoning_effort is not None:
        choice.offer(_from_effort(spec, reasoning_effort), None, effort_given=True)
    if suffix is not None:
        effort, given, include = _from_suffix(spec, suffix)
        choice.offer(effort, include, effort_given=given)

    cfg: dict = {}
    if choice.include:
        cfg["includeThoughts"] = True
    if choice.effort is not None:
        kind, value = choice.effort
        cfg["thinkingLevel" if kind == "level" else "thinkingBudget"] = value
    return cfg or None
