"""Complexity router: score the last request of a chat from explainable features, pick a tier.

The score is a sum of named contributions, so a routing decision can always be explained by
its largest terms (`RouteScore.top_features`). Only the last user message is scored: pasted
material (fenced code, long quotes, data after a line ending in ':') is set apart, because
the task asked about it decides the tier, not its length. Pure functions, no I/O.
"""

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.inference import routing_cues as cues

DEFAULT_THRESHOLD = 0.75
# Bounds that keep scoring near 2 ms even for huge inputs (typical prompts take well under
# 1 ms): a request is stated at the start or end of a message, not deep inside pasted material.
_SCAN_HEAD, _SCAN_TAIL = 4_000, 1_500  # of the message, to find the request
_CLIP_HEAD, _CLIP_TAIL = 800, 300  # of the request, to match cue words

_FENCE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_LONG_QUOTE = re.compile(r"\"[^\"]{60,}\"|“[^”]{60,}”|«[^»]{60,}»|「[^」]{30,}」")
_INLINE_CODE = re.compile(r"`[^`\n]{1,80}`")  # a reference to a thing; its name is no cue
_PARAGRAPH = re.compile(r"\n\s*\n")
_CLAUSE = re.compile(r"(?<=[.!?;:,])\s+|\s+-\s+|\n+|[。！？；，]")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*|\d+(?:[.,]\d+)*")
_CJK = re.compile(cues.CJK_CHAR)
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_MATH_SYMBOL = re.compile(
    r"[∫∑∏√∞≤≥≠≈∂∇πθλ²³⁻¹×÷^]|\\(?:frac|int|sum|sqrt|lim)|\d!|\b[a-z]\s*[=<>]\s*[-\d(]"
)
_QUESTION = re.compile(r"[?？]")
_DATA_LINE = re.compile(r"^\s*(?:[-*•]\s|\d{1,4}[:/.)-]|[^\s,]+\s*[,|\t;]|.*\.{4,})")
_CODE_PUNCT = re.compile(r"[(){}\[\]=<>;_'\"`|]|\w\.\w")
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s", re.MULTILINE)
_PASTE_START = re.compile(
    r"^\s*(?:-{3,}|={3,}|subject:|from:|dear\b|hi (?:all|team|everyone))", re.IGNORECASE
)
# A request that points at material ("summarise this email") is followed by that material.
_POINTS_AT = re.compile(
    r"\b(?:this|these|the following|below)\s+(?:\w+\s+)?(?:e-?mails?|text|article|message|notes"
    r"|paragraphs?|log|document|letter|essay|transcript|reviews?|passage|story|data|list)\b"
    r"|(?:this|below)\s*[:?]?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class RouteScore:
    """A routing decision: the score, the tier it picks, and each feature's contribution."""

    score: float
    tier: str
    features: dict[str, float]

    def top_features(self, n: int = 3) -> list[str]:
        """The names of the `n` features that moved the score most, either way."""
        ranked = sorted(self.features.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
        named = [name for name, value in ranked if value]
        return (named or [name for name, _ in ranked])[:n]


@dataclass(frozen=True, slots=True)
class _Task:
    instruction: str
    code_lines: int
    pasted_items: int


def message_text(message: Mapping[str, Any]) -> str:
    """A message's text, whether its content is a string or a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type", "text") == "text"
        )
    return ""


def _is_data(paragraph: str) -> bool:
    """Tabular, log-like or unfenced code: lines of records, or dense in code punctuation."""
    lines = [line for line in paragraph.splitlines() if line.strip()]
    if len(_CODE_PUNCT.findall(paragraph)) >= 0.06 * len(paragraph):
        return True
    return len(lines) >= 2 and sum(bool(_DATA_LINE.match(ln)) for ln in lines) >= 0.6 * len(lines)


class _Splitter:
    """Walks a message's paragraphs, keeping the request and setting pasted material apart."""

    def __init__(self) -> None:
        self.kept: list[str] = []
        self.pasted: list[str] = []
        self.in_paste = self.after_code = False

    def code_block(self) -> None:
        self.in_paste = self.after_code = True

    def paragraph(self, text: str) -> None:
        if self.in_paste:
            # Prose after a code block is the request again ("... why does this crash?").
            resumed = self.after_code and not _is_data(text)
            (self.kept if resumed else self.pasted).append(text)
        elif _PASTE_START.match(text) or (self.kept and _is_data(text)):
            self._paste(text)
        else:
            self._request(text)

    def _paste(self, text: str) -> None:
        self.pasted.append(text)
        self.in_paste, self.after_code = True, False

    def _request(self, text: str) -> None:
        lines = text.splitlines()
        cut = next((i for i, line in enumerate(lines) if line.rstrip().endswith(":")), None)
        if cut is not None:  # "Translate this:\n<text>"
            self.kept.append("\n".join(lines[: cut + 1]))
            self._paste("\n".join(lines[cut + 1 :]))
        elif len(lines) >= 3 and _is_data(text):  # records with the question among them
            records = [line for line in lines if _DATA_LINE.match(line)]
            self.kept.append("\n".join(line for line in lines if not _DATA_LINE.match(line)))
            self._paste("\n".join(records))
        else:
            self.kept.append(text)
            self.in_paste = _POINTS_AT.search(text) is not None

    def task(self, code_lines: int) -> _Task:
        pasted = self.pasted
        # A short question after pasted prose is the request ("... what should I reply?").
        if pasted and not self.after_code and "?" in pasted[-1] and len(pasted[-1].split()) <= 40:
            self.kept.append(pasted.pop())
        items = len(_LIST_ITEM.findall("\n".join(pasted)))
        return _Task("\n".join(kept for kept in self.kept if kept.strip()), code_lines, items)


def _split_task(text: str) -> _Task:
    """Separate the request from material pasted for it to work on."""
    splitter = _Splitter()
    for i, segment in enumerate(_FENCE.split(text)):
        if i:
            splitter.code_block()
        segment = _INLINE_CODE.sub(" it ", _LONG_QUOTE.sub(' "…" ', segment))
        for paragraph in _PARAGRAPH.split(segment):
            if paragraph.strip():
                splitter.paragraph(paragraph)
    return splitter.task(sum(block.count("\n") for block in _FENCE.findall(text)))


def _clip(text: str, head: int, tail: int) -> str:
    return text if len(text) <= head + tail else f"{text[:head]}\n\n{text[-tail:]}"


def _word_count(text: str) -> float:
    # CJK scripts do not space words; about two characters make one word.
    cjk = len(_CJK.findall(text))
    return len(_WORD.findall(_CJK.sub(" ", text) if cjk else text)) + cjk / 2


def _clause_leads(text: str) -> list[str]:
    leads = []
    for clause in _CLAUSE.split(text):
        clause = cues.FILLER.sub("", clause.strip())
        if clause:
            leads.append(" ".join(clause.split()[:6]))
    return leads


def _task_cues(text: str, task: _Task) -> dict[str, float]:
    """What kind of work the request asks for (each family pulls towards large)."""
    artifact = cues.CODE_ARTIFACT.search(text) or cues.CODE_IMPLEMENT.search(text)
    maker = cues.CODE_VERB.search(text) or cues.CODE_LANGUAGE.search(text)
    debugging = cues.DEBUG.contribution(text)
    if cues.CODE_TRANSFORM.search(text):
        debugging = min(2.5, debugging + 1.5)
    if debugging and task.code_lines >= 3:
        debugging += 0.75  # the problem comes with the code it is about
    symbols = len(set(_MATH_SYMBOL.findall(text)))
    return {
        "proof_reasoning": cues.PROOF.contribution(text),
        "math": cues.MATH.contribution(text) + min(1.2, 0.4 * symbols),
        "code_build": 2.0 if artifact and maker else 0.0,
        "algorithmic": cues.ALGORITHMIC.contribution(text),
        "debugging": debugging,
        "design_analysis": cues.DESIGN.contribution(text),
        "legal_medical_advice": cues.ADVICE.contribution(text),
        "creative_writing": cues.CREATIVE.contribution(text),
    }


def _shape(text: str, words: float, task: _Task, simple: bool) -> dict[str, float]:
    """Language-independent size signals: length, requirements, quantities, questions."""
    numbers = len(_NUMBER.findall(text))
    questions = len(_QUESTION.findall(text))
    return {
        "length": max(-1.0, min(2.0, 0.9 * math.log2(max(words, 1.0) / 12))),
        "constraints": min(2.0, 0.12 * len(cues.CONSTRAINT.findall(text))),
        "numbers": 1.0 if numbers >= 8 else 0.5 if numbers >= 4 else 0.0,
        "questions": min(1.2, 0.4 * (questions - 1)) if questions >= 2 else 0.0,
        "pasted_requirements": 0.0 if simple else min(1.0, 0.15 * task.pasted_items),
    }


def _small_cues(text: str, leads: list[str], words: float, hard: bool) -> dict[str, float]:
    """Signs of a quick task: a simple transform, a look-up, small talk, plain arithmetic."""
    lead_text = " | ".join(leads)
    if _CJK.search(text):
        lead_text = text
        lookup = words <= 20 and cues.CJK_LOOKUP.search(text) is not None
    else:
        lookup = any(cues.LOOKUP_LEAD.match(lead) for lead in leads)
    chit_chat = bool(leads) and cues.CHIT_CHAT.match(text.strip()) is not None
    arithmetic = words <= 12 and _NUMBER.search(text) is not None and not hard
    return {
        "simple_task": cues.SMALL_TASK.contribution(lead_text),
        "lookup": (-1.5 if words <= 15 else -0.75 if words <= 30 else 0.0) if lookup else 0.0,
        "brevity_request": cues.BREVITY.contribution(text),
        "short_artifact": cues.SHORT_ARTIFACT.contribution(text),
        "chit_chat": (-2.0 if words <= 12 else -0.5) if chit_chat else 0.0,
        "arithmetic": -1.0 if arithmetic else 0.0,
    }


TOOLS_WEIGHT = 0.25


def _context(prior_user_turns: int, max_tokens: int | None) -> dict[str, float]:
    budget = 0.0
    if max_tokens is not None:
        budget = 0.75 if max_tokens >= 4000 else 0.4 if max_tokens >= 1500 else 0.0
        budget = -0.5 if max_tokens <= 100 else budget
    return {"conversation_depth": 0.2 * min(max(prior_user_turns, 0), 2), "max_tokens": budget}


def score_conversation(
    messages: Sequence[Mapping[str, Any]],
    max_tokens: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    offers_tools: bool = False,
) -> RouteScore:
    """Score the last user message (earlier turns are light context) and pick a tier.

    The tier is `large` when the score reaches `threshold`, else `small`. Only text is
    scored (never tool schemas or images); a request that offers tools scores a little
    higher than its text alone, since choosing and filling calls is work of its own.
    """
    users = [m for m in messages if m.get("role") == "user"]
    last = message_text(users[-1]) if users else ""
    task = _split_task(_clip(last, _SCAN_HEAD, _SCAN_TAIL))
    text = _clip(task.instruction.lower(), _CLIP_HEAD, _CLIP_TAIL)
    # Beyond the clip, count words at the clipped text's rate.
    words = _word_count(text) * max(1.0, len(task.instruction) / max(len(text), 1))
    work = _task_cues(text, task)
    hard = bool(work["proof_reasoning"] or work["math"] or work["code_build"])
    small = _small_cues(text, _clause_leads(text), words, hard)
    features = {
        **work,
        **_shape(text, words, task, simple=bool(small["simple_task"])),
        **small,
        **_context(len(users) - 1, max_tokens),
        "tools": TOOLS_WEIGHT if offers_tools else 0.0,
    }
    features = {name: round(value, 3) for name, value in features.items() if value}
    features.setdefault("length", 0.0)
    score = round(sum(features.values()), 3)
    return RouteScore(score, "large" if score >= threshold else "small", features)
