"""Explicit preferences the user states, found by rules: PreferenceMemory without an LLM.

Fine mode asks the LLM for preferences; without one (fast mode, fine mode with no LLM
configured, a fine batch whose LLM output was unusable) this module finds the preferences a
user states outright in their own turns, in English and Chinese, so that
``include_preference`` has something to return offline.

It is built to be precise rather than complete. A preference is taken only when

- the message is the user's (never assistant, system, developer or tool text);
- the clause *starts* with the user as subject (``I …``, ``My favourite … is``, ``我…``),
  after at most a few discourse words ("and", "but", "honestly", "其实", "不过" …): this is
  what keeps out negated or hedged embeddings ("I don't think I like …", "I'm not sure I
  prefer …"), reported speech ("my wife likes …", "她说我喜欢 …", quotations), subjects other
  than the user ("we", "you", "我们", "我妈妈") and questions by inversion ("do I like …");
- a cue of a fixed list follows the subject directly, with only listed adverbs between
  (English: like, love, prefer, enjoy, adore, hate, dislike, detest, can't stand, don't like,
  I'm allergic to, I'm (not) a fan of, I'd rather / I'd prefer, I've always liked,
  I always / I never + a habit verb (eat, book, choose …), my favourite X is Y;
  Chinese: 喜欢, 更喜欢, 比较喜欢, 偏好, 偏爱, 倾向于, 宁愿, 爱吃, 不喜欢, 讨厌, 受不了, 不吃,
  不能吃, 对…过敏, 对…(不)感兴趣, 最喜欢的…是 …);
- the sentence is not a question (ends in "?" / "？", or the clause ends in 吗/么/嘛/吧/呢;
  a trailing "你呢？" / "and you?" only makes its own clause a question);
- no earlier clause of the sentence opened a hypothesis ("if", "suppose", "如果", "要是" …);
- what follows the cue is a concrete object: not empty, not only a pronoun or a reference to
  the assistant's words ("I like it", "I love your idea", "我喜欢这个"), not longer than
  ``max_clause_chars``; over that limit the clause is skipped, never cut.

The object ends at the clause: at a sentence end, before "but", "because", "although", a
comma that opens a new subject or subordinate clause (", I", ", which", ", because" …), at a
Chinese comma and before 但是, 不过, 因为, 所以. Lists ("jazz, blues and soul") stay whole.

The statement stored is the preference without the subject, in the user's words: the verb
goes to the third person in English ("I really prefer X" → "really prefers X", "I'm
allergic to X" → "is allergic to X", "My favourite colour is blue" → "favourite colour is
blue"); Chinese drops the leading 我 ("我更喜欢靠近会场的酒店" → "更喜欢靠近会场的酒店").
Discourse adverbs ("also", "just", "actually", "也", "还是" …) are dropped from it.

Bounds: the first ``MAX_SCAN_CHARS`` characters of a text part are read; a message yields
at most ``max_per_message`` preferences; fenced code blocks and ">" quoted lines are not read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from services.ingest.models import ChatMessage

MAX_PER_MESSAGE = 8
MAX_CLAUSE_CHARS = 120
MAX_SCAN_CHARS = 20_000


@dataclass(frozen=True)
class Found:
    """One preference in one text: statement, polarity and the span of the text it comes from."""

    statement: str
    polarity: str  # "like" or "dislike"
    start: int
    end: int


@dataclass(frozen=True)
class Preference:
    """One preference of one message: ``span == message.parts[part_index].text[start:end]``."""

    statement: str
    polarity: str
    message_index: int
    part_index: int
    start: int
    end: int
    span: str
    kind: str = "explicit"


# text preparation --------------------------------------------------------------------------------
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\uff07": "'"})  # same length: offsets hold
_FENCE = re.compile(r"```.*?(?:```|$)", re.S)
_QUOTED_LINE = re.compile(r"^[ \t]*>.*$", re.M)


def _blank(m: re.Match[str]) -> str:
    return re.sub(r"[^\n]", " ", m.group(0))


def _prepare(text: str) -> str:
    """Text for matching: straight apostrophes, code and quoted lines blanked, offsets unchanged."""
    norm = text[:MAX_SCAN_CHARS].translate(_APOSTROPHES)
    norm = _FENCE.sub(_blank, norm)
    return _QUOTED_LINE.sub(_blank, norm)


_HARD_END = frozenset("。！？；;\n")
_SOFT_END = frozenset(".!?…")
_AFTER_SOFT = frozenset(" \t\r\n\"')]”’）")
_END_RUN = frozenset(".!?。！？…")


def _sentences(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, terminator) of each sentence; "2.5 bar" and "e.g.x" do not end one."""
    n, start, i = len(text), 0, 0
    while i < n:
        c = text[i]
        if c in _HARD_END or (
            c in _SOFT_END and (i + 1 == n or text[i + 1] in _AFTER_SOFT or "\u4e00" <= text[i + 1] <= "\u9fff")
        ):
            j = i + 1
            while j < n and text[j] in _END_RUN:
                j += 1
            yield start, i, text[i:j]
            start = i = j
            continue
        i += 1
    if start < n:
        yield start, n, ""


_BREAK = re.compile(
    r"[,，]\s*(?=(?:but|because|since|so|though|although|while|whereas|except|yet|which|then|I|I'm|I'd|I've|"
    r"I'll|my|you|your|we|he|she|it|it's|they|this|that|there|what|how|do|does|did|is|are|can|could|would|"
    r"will|should)\b)"
    r"|(?<=\s)(?=(?:but|because|although|though|whereas)\b)"
    r"|(?<=\s)(?:and|so|or|then)\s+(?=I\b|I'|my\b)"
    r"|，|,(?=\s*[\u4e00-\u9fff])"
    r"|(?=但是|可是|不过|因为|所以|而且我|然后我|并且我)",
    re.I,
)


def _clauses(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans, pos = [], start
    for m in _BREAK.finditer(text, start, end):
        if m.start() > pos or m.end() > pos:
            spans.append((pos, m.start()))
            pos = m.end()
    spans.append((pos, end))
    return [(a, b) for a, b in spans if b > a]


# the rules ---------------------------------------------------------------------------------------------
_LEAD = re.compile(
    r"(?:(?:and|but|so|also|well|oh|ok|okay|yes|yeah|yep|no|nope|honestly|actually|personally|generally|"
    r"usually|normally|typically|really|though|however|btw|anyway|anyways|plus|frankly|overall|hmm+|um+|uh+|"
    r"by the way|in general|to be honest|for the record|for me|as for me|as a rule|in fact|of course|"
    r"these days|nowadays|because)\b[\s,:;!.-]*"
    r"|(?:说实话|老实说|老实讲|坦白说|坦白讲|一般来说|总的来说|就我而言|对我来说|对我而言|个人来说|其实呢|其实|"
    r"总之|另外|还有|而且|并且|不过|但是|可是|所以|然后|因为|对了|是的|是啊|好的|嗯+|哦|噢|啊|对|但|平时|通常|"
    r"一般)[\s，,：:！!]*"
    r"|[-*•>]\s*|\s+|[,，:：])*",
    re.I,
)
_HYPOTHESIS = re.compile(
    r"(?:if|suppose|supposing|imagine|assuming|assume|unless|whenever|when|in case|let's say|say|pretend|"
    r"what if|even if)\b|如果|假如|要是|假设|万一|倘若|如若|若是|假使|设想|想象",
    re.I,
)
_FOLLOW_UP_QUESTION = re.compile(
    r"(?:你呢|您呢|你们呢|你觉得呢|你怎么看|你怎么样|and you|what about you|how about you|do you|you)\W*$", re.I
)
_QUESTION_PARTICLE = re.compile(r"(?:[吗么嘛呢]|(?<![酒网])吧)[\s。，,！!？?…~～]*$")

_EN_ADV = (
    r"(?:(?:really|also|just|absolutely|definitely|generally|usually|normally|typically|much|totally|still|"
    r"strongly|personally|truly|honestly|actually|mostly|certainly|genuinely|do|always|especially|"
    r"particularly|kind\s+of|kinda|sort\s+of|very\s+much|so|quite|rather)\s+)"
)
_EN_DROP = {"also", "just", "actually", "honestly", "personally", "do"}
_HABIT_VERBS = (
    r"(?:eat|drink|order|book|choose|pick|take|use|stay|sit|fly|travel|buy|wear|watch|read|drive|cook|shop|"
    r"request|select|go\s+for|opt\s+for|ask\s+for|listen\s+to)"
)
_ZH_ADV = (
    r"(?:非常|特别|真的|一直|比较|还是|向来|一向|从来|平时|通常|一般|超级|相当|十分|尤其|确实|其实|个人|总是|"
    r"本来就|更加|倒是|也|都|还|就|很|真|更|最|超|挺|蛮)"
)
_ZH_DROP = ("本来就", "还是", "真的", "确实", "其实", "个人", "倒是", "也", "都", "还", "就")
_ZH_DISLIKE = (
    "不太喜欢",
    "不是很喜欢",
    "不怎么喜欢",
    "不喜欢",
    "不太爱吃",
    "不爱吃",
    "不爱喝",
    "讨厌",
    "厌恶",
    "反感",
    "受不了",
    "接受不了",
    "忍受不了",
    "不太能吃",
    "不能吃",
    "不能喝",
    "从不吃",
    "从不喝",
    "不吃",
    "不喝",
    "吃不了",
    "喝不了",
    "不碰",
)
_ZH_LIKE = ("偏好", "偏爱", "倾向于", "喜欢", "钟爱", "热爱", "爱吃", "爱喝", "爱看", "爱听", "爱玩", "宁愿", "宁可")
_ZH_HABIT = r"(?:订|选择|选|住|坐|点|买|用|喝|吃|穿|带)"


def _third(verb: str) -> str:
    """Third person singular of an English verb phrase: "like" → "likes", "go for" → "goes for"."""
    words = verb.split()
    first = words[0].lower()
    if first in ("can't", "cannot"):
        return " ".join(w.lower() for w in words)
    if first in ("go", "do"):
        first += "es"
    elif first.endswith(("s", "sh", "ch", "x", "z")):
        first += "es"
    elif first.endswith("y") and len(first) > 1 and first[-2] not in "aeiou":
        first = first[:-1] + "ies"
    else:
        first += "s"
    return " ".join([first, *(w.lower() for w in words[1:])])


def _negated(neg: str) -> str:
    return "does not" if neg.lower().startswith("do ") else "doesn't"


def _adverbs(text: str | None, drop: set[str] = _EN_DROP) -> str:
    words = (text or "").lower().split()
    kept = [w for w in words if w not in drop]
    return " ".join(kept) + " " if kept else ""


def _zh_adverbs(text: str | None) -> str:
    text = text or ""
    for d in _ZH_DROP:
        text = text.replace(d, "")
    return text


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    head: Callable[[re.Match[str]], tuple[str, str]]  # (statement head, polarity)
    whole: bool = False  # the match holds the object: nothing but particles may follow
    joiner: str = " "


def _en(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.I)


_EN_RULES = [
    _Rule(
        _en(
            r"my\s+(?P<pre>(?:all[- ]time|absolute|very)\s+)?(?P<fav>favou?rite)"
            r"(?:\s+(?P<what>[a-z][\w'-]*(?:\s+[\w'-]+){0,3}?))?\s+(?P<be>is|are)\s+"
        ),
        lambda m: (" ".join(w for w in (m["fav"].lower(), m["what"] or "", m["be"].lower()) if w), "like"),
    ),
    _Rule(
        _en(r"I(?:'m|\s+am)\s+(?P<adv>(?:very|severely|highly|really|also|quite|mildly|deathly)\s+)?allergic\s+to\s+"),
        lambda m: (f"is {_adverbs(m['adv'])}allergic to", "dislike"),
    ),
    _Rule(
        _en(r"I(?:'m|\s+am)\s+not\s+(?:really\s+)?(?:a\s+)?(?P<adj>(?:big|huge|great)\s+)?fan\s+of\s+"),
        lambda m: (f"is not a {(m['adj'] or '').lower()}fan of", "dislike"),
    ),
    _Rule(
        _en(r"I(?:'m|\s+am)\s+(?:a\s+)?(?P<adj>(?:big|huge|great|massive)\s+)?fan\s+of\s+"),
        lambda m: (f"is a {(m['adj'] or '').lower()}fan of", "like"),
    ),
    _Rule(
        _en(r"I(?:'d|\s+would)\s+(?P<adv>(?:much|really|definitely|honestly)\s+)?(?P<v>rather|prefer)\s+"),
        lambda m: (f"would {_adverbs(m['adv'])}{m['v'].lower()}", "like"),
    ),
    _Rule(
        _en(r"I(?:'ve|\s+have)\s+always\s+(?P<v>liked|loved|preferred|enjoyed|hated|disliked)\s+"),
        lambda m: (f"has always {m['v'].lower()}", "dislike" if m["v"].lower() in ("hated", "disliked") else "like"),
    ),
    _Rule(
        _en(
            rf"I\s+(?P<adv>{_EN_ADV}{{0,2}})(?P<neg>don't|dont|do\s+not)\s+"
            r"(?P<adv2>(?:really|particularly|much|especially|actually|generally)\s+)?(?P<v>like|enjoy|love|care\s+for)\s+"
        ),
        lambda m: (f"{_adverbs(m['adv'])}{_negated(m['neg'])} {_adverbs(m['adv2'])}{m['v'].lower()}", "dislike"),
    ),
    _Rule(
        _en(
            rf"I\s+(?P<adv>{_EN_ADV}{{0,3}})"
            r"(?P<v>hate|dislike|detest|loathe|despise|can't\s+stand|cannot\s+stand|can't\s+bear|cannot\s+bear)\s+"
        ),
        lambda m: (f"{_adverbs(m['adv'])}{_third(m['v'])}", "dislike"),
    ),
    _Rule(
        _en(rf"I\s+(?P<adv>{_EN_ADV}{{0,3}})(?P<v>like|love|prefer|enjoy|adore|favou?r)\s+"),
        lambda m: (f"{_adverbs(m['adv'])}{_third(m['v'])}", "like"),
    ),
    _Rule(
        _en(rf"I\s+(?P<h>always|never)\s+(?P<v>{_HABIT_VERBS})\s+"),
        lambda m: (f"{m['h'].lower()} {_third(m['v'])}", "like" if m["h"].lower() == "always" else "dislike"),
    ),
]


def _zh_polarity(verb: str) -> str:
    return "dislike" if verb.startswith(("不", "讨厌", "厌恶", "反感", "没")) or "过敏" in verb else "like"


_ZH_RULES = [
    _Rule(
        re.compile(
            rf"我(?P<adv>{_ZH_ADV}{{0,6}})(?P<v>不喜欢|讨厌|喜欢|偏爱|爱)的(?P<what>[^，,。！？!?；;\s]{{0,12}}?)是"
        ),
        lambda m: (f"{_zh_adverbs(m['adv'])}{m['v']}的{m['what']}是", _zh_polarity(m["v"])),
        joiner="",
    ),
    _Rule(
        re.compile(
            rf"我(?P<adv>{_ZH_ADV}{{0,6}})对(?P<x>[^，,。！？!?；;]{{1,40}}?)"
            r"(?P<v>严重过敏|过敏|不感兴趣|没有?(?:什么)?兴趣|(?:很|非常|特别|比较|挺)?感兴趣)"
        ),
        lambda m: (f"{_zh_adverbs(m['adv'])}对{m['x']}{m['v']}", _zh_polarity(m["v"])),
        whole=True,
        joiner="",
    ),
    _Rule(
        re.compile(rf"我(?P<adv>{_ZH_ADV}{{0,6}})(?P<v>{'|'.join(_ZH_DISLIKE + _ZH_LIKE)})"),
        lambda m: (f"{_zh_adverbs(m['adv'])}{m['v']}", _zh_polarity(m["v"])),
        joiner="",
    ),
    _Rule(
        re.compile(rf"我(?P<adv>总是|一直|每次都|向来|一向|通常都|一般都)(?P<v>{_ZH_HABIT})"),
        lambda m: (f"{m['adv']}{m['v']}", "like"),
        joiner="",
    ),
]

_VAGUE_EN = re.compile(
    r"(?:it|that|this|these|those|them|you|him|her|one|so|too|both|either|neither|what|which|something|"
    r"anything|everything|nothing|yours|either one|this one|that one|the idea|the first one|the second one|"
    r"the last one|the other one)(?:\s+(?:a lot|very much|so much|too|as well|though|either|more|better|best))?"
    r"|(?:it|that|this|these|those|your|you|how you|what you|the way you)\b.*"
    r"|to\s+(?:think|believe|say|imagine|hope|know|suppose|assume)\b.*"
    r"|not\s+to\s+(?:say|answer|tell|discuss|share|talk)\b.*",
    re.I | re.S,
)
_VAGUE_ZH = re.compile(
    r"(?:它|它们|这|那|这个|那个|这些|那些|这样|那样|你|您|你们|他|她|他们|她们|什么|一切|这个主意|这个想法)"
    r"|(?:的|你的|您的|得).*",
    re.S,
)
_TRIM = " \t\r\n.,;:!?…\"'”’)]）】。，！？；：~～、"
_ZH_TAIL_PARTICLES = "啊呀哦啦哈了"
_MEANINGFUL = re.compile(r"[\w\u4e00-\u9fff]")


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in " \t\r\n":
        start += 1
    while end > start:
        c = text[end - 1]
        if c in _TRIM:
            end -= 1
        elif c in _ZH_TAIL_PARTICLES and end - 1 > start and "\u4e00" <= text[end - 2] <= "\u9fff":
            end -= 1
        else:
            break
    return start, end


def _match_clause(text: str, norm: str, start: int, end: int, max_clause_chars: int) -> Found | None:
    """A preference whose subject opens the clause norm[start:end], or None."""
    pos = _LEAD.match(norm, start, end).end()  # type: ignore[union-attr]
    if pos >= end:
        return None
    rules = _ZH_RULES if norm[pos] == "我" else _EN_RULES
    for rule in rules:
        m = rule.pattern.match(norm, pos, end)
        if m is None:
            continue
        head, polarity = rule.head(m)
        o_start, o_end = _trim(norm, m.end(), end)
        if rule.whole:
            if o_end > o_start and norm[o_start:o_end].strip(_ZH_TAIL_PARTICLES):
                return None
            span_end = m.end()
            statement = head
        else:
            obj = text[o_start:o_end]
            if not obj or not _MEANINGFUL.search(obj) or len(obj) > max_clause_chars or obj[0] in "-,;:":
                return None
            vague = _VAGUE_ZH if rule.joiner == "" else _VAGUE_EN
            if vague.fullmatch(obj):
                return None
            if rule.joiner == " " and re.match(r"not\b", obj, re.I) and head.split()[-1] in ("rather", "prefer"):
                polarity = "dislike"
            if rule.joiner == " " and head.split()[-1] == "prefers" and re.match(r"not\s+to\b", obj, re.I):
                polarity = "dislike"
            span_end = o_end
            statement = f"{head}{rule.joiner}{obj}"
        statement = re.sub(r"\s+", " ", statement).strip()
        if len(statement) > max_clause_chars + 40:
            return None
        return Found(statement, polarity, m.start(), span_end)
    return None


def find_preferences(
    text: str, *, max_results: int = MAX_PER_MESSAGE, max_clause_chars: int = MAX_CLAUSE_CHARS
) -> list[Found]:
    """The explicit preferences stated in one text of the user's, in order, at most ``max_results``."""
    norm = _prepare(text)
    found: list[Found] = []
    seen: set[str] = set()
    for s_start, s_end, terminator in _sentences(norm):
        if len(found) >= max_results:
            break
        clauses = _clauses(norm, s_start, s_end)
        asked = "?" in terminator or "？" in terminator
        last = len(clauses) - 1
        follow_up = (
            asked and last > 0 and _FOLLOW_UP_QUESTION.match(norm, _lead_end(norm, *clauses[last]), clauses[last][1])
        )
        hypothesis = False
        for k, (c_start, c_end) in enumerate(clauses):
            lead = _lead_end(norm, c_start, c_end)
            if _HYPOTHESIS.match(norm, lead, c_end):
                hypothesis = True
            if hypothesis or (asked and not (follow_up and k != last)):
                continue
            if _QUESTION_PARTICLE.search(norm[c_start:c_end]):
                continue
            f = _match_clause(text, norm, c_start, c_end, max_clause_chars)
            if f is None:
                continue
            key = f.statement.casefold()
            if key in seen:
                continue
            seen.add(key)
            found.append(f)
            if len(found) >= max_results:
                break
    return found


def _lead_end(norm: str, start: int, end: int) -> int:
    return _LEAD.match(norm, start, end).end()  # type: ignore[union-attr]


def extract(
    messages: Sequence[ChatMessage],
    *,
    max_per_message: int = MAX_PER_MESSAGE,
    max_clause_chars: int = MAX_CLAUSE_CHARS,
) -> list[Preference]:
    """The explicit preferences of the user's messages, in order; the same statement once (its first)."""
    out: list[Preference] = []
    seen: set[tuple[str, str]] = set()
    for i, msg in enumerate(messages):
        if msg.role != "user":
            continue
        budget = max_per_message
        for j, part in enumerate(msg.parts):
            if part.kind != "text" or not part.text or budget <= 0:
                continue
            for f in find_preferences(part.text, max_results=budget, max_clause_chars=max_clause_chars):
                budget -= 1
                key = (f.statement.casefold(), f.polarity)
                if key in seen:
                    continue
                seen.add(key)
                out.append(Preference(f.statement, f.polarity, i, j, f.start, f.end, part.text[f.start : f.end]))
    return out
