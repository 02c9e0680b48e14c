"""The rule-based preference extractor (services/ingest/preferences.py) and its place in the pipeline."""

from __future__ import annotations

import time

import pytest

from services.ingest import preferences
from services.ingest.models import ChatMessage, Part
from services.ingest.pipeline import Ingestor
from services.ingest.preferences import MAX_SCAN_CHARS, Preference, extract, find_preferences
from services.ingest.settings import IngestSettings
from tests.fakes.openai_server import FakeOpenAI
from tests.ingest.conftest import scripted_llm

LIKE, DISLIKE = "like", "dislike"

# text -> [(statement, polarity, span)]; the span is the exact text the preference comes from.
CASES: list[tuple[str, list[tuple[str, str, str]]]] = [
    # Chinese, explicit --------------------------------------------------------------------------
    ("我更喜欢靠近会场的酒店", [("更喜欢靠近会场的酒店", LIKE, "我更喜欢靠近会场的酒店")]),
    ("我喜欢安静的酒店，最好靠近地铁站。", [("喜欢安静的酒店", LIKE, "我喜欢安静的酒店")]),
    ("我很喜欢吃辣，但是不吃香菜。", [("很喜欢吃辣", LIKE, "我很喜欢吃辣")]),
    ("我比较喜欢靠窗的座位", [("比较喜欢靠窗的座位", LIKE, "我比较喜欢靠窗的座位")]),
    ("我偏好早上的航班。", [("偏好早上的航班", LIKE, "我偏好早上的航班")]),
    ("我倾向于选择高铁", [("倾向于选择高铁", LIKE, "我倾向于选择高铁")]),
    ("我不喜欢太甜的咖啡", [("不喜欢太甜的咖啡", DISLIKE, "我不喜欢太甜的咖啡")]),
    ("我讨厌排队！", [("讨厌排队", DISLIKE, "我讨厌排队")]),
    ("我不吃香菜", [("不吃香菜", DISLIKE, "我不吃香菜")]),
    ("我对花生过敏。", [("对花生过敏", DISLIKE, "我对花生过敏")]),
    ("我最喜欢的颜色是蓝色", [("最喜欢的颜色是蓝色", LIKE, "我最喜欢的颜色是蓝色")]),
    ("其实我更喜欢A方案而不是B方案", [("更喜欢A方案而不是B方案", LIKE, "我更喜欢A方案而不是B方案")]),
    ("我一般不吃早饭", [("一般不吃早饭", DISLIKE, "我一般不吃早饭")]),
    ("我个人更喜欢简洁的回答", [("更喜欢简洁的回答", LIKE, "我个人更喜欢简洁的回答")]),
    ("我不是很喜欢吃甜的", [("不是很喜欢吃甜的", DISLIKE, "我不是很喜欢吃甜的")]),
    ("我对这个话题不感兴趣", [("对这个话题不感兴趣", DISLIKE, "我对这个话题不感兴趣")]),
    ("对我来说，我更喜欢安静的地方", [("更喜欢安静的地方", LIKE, "我更喜欢安静的地方")]),
    ("我喜欢茶，你呢？", [("喜欢茶", LIKE, "我喜欢茶")]),
    ("我喜欢去酒吧", [("喜欢去酒吧", LIKE, "我喜欢去酒吧")]),
    (
        "我喜欢上海，因为我喜欢海边的城市。",
        [("喜欢上海", LIKE, "我喜欢上海"), ("喜欢海边的城市", LIKE, "我喜欢海边的城市")],
    ),
    # Chinese, not a preference of the user ------------------------------------------------------
    ("我不觉得我喜欢这个城市", []),  # negated
    ("你喜欢咖啡吗？", []),  # a question, about the assistant
    ("我喜欢咖啡吗", []),  # a question
    ("我喜欢吃辣吧", []),  # tentative
    ("如果我喜欢的话就买", []),  # hypothetical
    ("要是我喜欢，我就买", []),  # hypothetical, then a clause of its own
    ("我可能更喜欢这个", []),  # hedged
    ("我以前喜欢咖啡", []),  # no longer
    ("我老婆喜欢海鲜", []),  # reported: someone else's
    ("我妈说我不吃辣", []),  # reported speech
    ("我们喜欢露营", []),  # not the user alone
    ("我并不讨厌他", []),  # double negation
    ("我喜欢你", []),  # no concrete object
    # English, explicit --------------------------------------------------------------------------
    ("I prefer hotels near the venue.", [("prefers hotels near the venue", LIKE, "I prefer hotels near the venue")]),
    (
        "I like quiet rooms, jazz, blues and soul.",
        [("likes quiet rooms, jazz, blues and soul", LIKE, "I like quiet rooms, jazz, blues and soul")],
    ),
    (
        "I love hiking but I hate running.",
        [("loves hiking", LIKE, "I love hiking"), ("hates running", DISLIKE, "I hate running")],
    ),
    (
        "I really don\u2019t like crowded places",
        [("really doesn't like crowded places", DISLIKE, "I really don\u2019t like crowded places")],
    ),
    ("I do not enjoy long meetings", [("does not enjoy long meetings", DISLIKE, "I do not enjoy long meetings")]),
    ("I can't stand loud music", [("can't stand loud music", DISLIKE, "I can't stand loud music")]),
    ("I'm allergic to peanuts", [("is allergic to peanuts", DISLIKE, "I'm allergic to peanuts")]),
    ("My favourite colour is blue", [("favourite colour is blue", LIKE, "My favourite colour is blue")]),
    ("My favorite is pizza!", [("favorite is pizza", LIKE, "My favorite is pizza")]),
    (
        "I'd rather take the train than fly",
        [("would rather take the train than fly", LIKE, "I'd rather take the train than fly")],
    ),
    ("I'd prefer not to fly.", [("would prefer not to fly", DISLIKE, "I'd prefer not to fly")]),
    ("I always book aisle seats", [("always books aisle seats", LIKE, "I always book aisle seats")]),
    ("I never eat pork", [("never eats pork", DISLIKE, "I never eat pork")]),
    ("I prefer tea over coffee", [("prefers tea over coffee", LIKE, "I prefer tea over coffee")]),
    ("I like tea, do you?", [("likes tea", LIKE, "I like tea")]),
    (
        "Honestly, I also really prefer window seats.",
        [("really prefers window seats", LIKE, "I also really prefer window seats")],
    ),
    (
        "I'm not a big fan of horror movies",
        [("is not a big fan of horror movies", DISLIKE, "I'm not a big fan of horror movies")],
    ),
    ("I've always loved Italian food", [("has always loved Italian food", LIKE, "I've always loved Italian food")]),
    ("The price is 2.5 dollars. I like cheap options.", [("likes cheap options", LIKE, "I like cheap options")]),
    ("I prefer trains when I travel", [("prefers trains when I travel", LIKE, "I prefer trains when I travel")]),
    # English, not a preference of the user ------------------------------------------------------
    ("I don't think I like sushi", []),  # negated
    ("I don't dislike jazz", []),  # double negation
    ("Do you like sushi?", []),  # a question, about the assistant
    ("Do I like sushi?", []),  # a question
    ("I like sushi?", []),  # a question by intonation
    ("If I like it, I'll buy it.", []),  # hypothetical
    ("If it were up to me, I'd rather stay home.", []),  # hypothetical, then a clause of its own
    ("When I travel, I prefer trains", []),  # a condition before the clause: skipped, not dropped
    ("My wife likes opera.", []),  # someone else's
    ("My wife's favourite colour is red", []),  # someone else's
    ("She said I love jazz.", []),  # reported speech
    ('"I love jazz," she said.', []),  # a quotation
    ("I think I prefer the window seat", []),  # hedged
    ("I used to like coffee", []),  # no longer
    ("I would like a coffee please", []),  # a request, not a preference
    ("I like it.", []),  # no concrete object
    ("I love your idea!", []),  # about the assistant's words
    ("I like to think I'm fair", []),
    ("I prefer not to say", []),  # a refusal
    ("I like,", []),
    (
        "Here:\n```python\n# I like code\n```\n> I like quoting\nI hate queues.",
        [("hates queues", DISLIKE, "I hate queues")],
    ),
    ("I like tea. I like tea.", [("likes tea", LIKE, "I like tea")]),  # once
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:40] for c in CASES])
def test_the_rules_find_exactly_the_users_explicit_preferences(text: str, expected: list[tuple[str, str, str]]) -> None:
    found = find_preferences(text)
    assert [(f.statement, f.polarity, text[f.start : f.end]) for f in found] == expected


def test_the_table_covers_both_languages_and_the_negative_cases() -> None:
    chinese = [c for c in CASES if any("\u4e00" <= ch <= "\u9fff" for ch in c[0])]
    assert len(CASES) >= 30 and len(chinese) >= 15 and len(CASES) - len(chinese) >= 15
    assert sum(1 for _, exp in CASES if not exp) >= 20


def test_only_user_turns_count_and_spans_point_into_their_parts() -> None:
    msgs = [
        ChatMessage("system", [Part("text", text="I prefer formal answers.")]),
        ChatMessage("user", [Part("text", text="Hi."), Part("text", text="我更喜欢靠近会场的酒店，谢谢。")]),
        ChatMessage("assistant", [Part("text", text="I like that choice. I prefer hotels with gyms.")]),
        ChatMessage("tool", [Part("text", text="I hate errors")], tool_call_id="c1"),
        ChatMessage("developer", [Part("text", text="I love tests")]),
        ChatMessage("user", [Part("text", text="I'm allergic to shellfish. 我更喜欢靠近会场的酒店")]),
    ]
    got = extract(msgs)
    assert got == [
        Preference("更喜欢靠近会场的酒店", LIKE, 1, 1, 0, 11, "我更喜欢靠近会场的酒店"),
        Preference("is allergic to shellfish", DISLIKE, 5, 0, 0, 25, "I'm allergic to shellfish"),
    ]  # the repeated statement of message 5 is kept once, with its first source
    for p in got:
        assert msgs[p.message_index].parts[p.part_index].text[p.start : p.end] == p.span


def test_the_work_is_bounded() -> None:
    many = " ".join(f"I like tea number {k}." for k in range(50))
    assert len(find_preferences(many)) == preferences.MAX_PER_MESSAGE
    msg_prefs = extract([ChatMessage("user", [Part("text", text=many), Part("text", text=many)])], max_per_message=3)
    assert [p.statement for p in msg_prefs] == ["likes tea number 0", "likes tea number 1", "likes tea number 2"]
    long_object = "I prefer " + "very " * 30 + "quiet rooms."
    assert find_preferences(long_object) == []  # over max_clause_chars: skipped, never cut
    assert find_preferences(long_object, max_clause_chars=400)[0].statement.startswith("prefers very")
    assert find_preferences("x" * MAX_SCAN_CHARS + " I like tea.") == []  # past the scanned prefix
    for bad in (" " * MAX_SCAN_CHARS + "x", "，" * MAX_SCAN_CHARS, "I really " * 3000, "我很" * 8000, "and, " * 4000):
        started = time.perf_counter()
        assert find_preferences(bad) == []
        assert time.perf_counter() - started < 2.0, repr(bad[:20])


# in the pipeline --------------------------------------------------------------------------------------
CHAT = [
    ("user", "我们下个月去上海开会。"),
    ("assistant", "好的，需要我推荐酒店吗？"),
    ("user", "我更喜欢靠近会场的酒店。"),
    ("assistant", "I prefer hotels with a gym, personally."),
    ("user", "Also, I never eat pork."),
]


def chat() -> list[ChatMessage]:
    return [
        ChatMessage(role, [Part("text", text=text)], chat_time=1.7e9 + k, message_id=f"m{k}")
        for k, (role, text) in enumerate(CHAT)
    ]


def prefs_of(items: list) -> list:  # type: ignore[type-arg]
    return [i for i in items if i.memory_type == "PreferenceMemory"]


async def test_fast_mode_stores_rule_preferences_with_sources_like_other_items() -> None:
    out = await Ingestor(IngestSettings()).extract(chat(), tags=["t"], info={"app": "x"})
    windows = [i for i in out.items if i.memory_type == "LongTermMemory"]
    assert windows and all("extractor:rules" not in i.tags for i in windows)
    zh, en = prefs_of(out.items)
    assert (zh.memory, zh.key) == ("更喜欢靠近会场的酒店", "更喜欢靠近会场的酒店")
    assert zh.tags == ["t", "mode:fast", "preference:explicit", "preference:like", "extractor:rules"]
    assert zh.info == {
        "app": "x",
        "preference_type": "explicit",
        "polarity": "like",
        "extractor": "rules",
        "span": {"part_index": 0, "start": 0, "end": 11},
    }
    (src,) = zh.sources
    assert (src.type, src.role, src.message_index, src.message_id, src.chat_time, src.content) == (
        "chat",
        "user",
        2,
        "m2",
        1.7e9 + 2,
        "我更喜欢靠近会场的酒店",
    )
    assert zh.event_time == 1.7e9 + 2
    assert (en.memory, en.tags[3], en.sources[0].message_index) == ("never eats pork", "preference:dislike", 4)


async def test_fine_mode_without_an_llm_uses_the_rules() -> None:
    out = await Ingestor(IngestSettings()).extract(chat(), mode="fine")
    assert out.effective_mode == "fast" and "stored with fast mode" in out.notices[0]
    assert [p.memory for p in prefs_of(out.items)] == ["更喜欢靠近会场的酒店", "never eats pork"]


@pytest.mark.parametrize("off", [{"rule_preferences": False}, {"extract_preferences": False}])
async def test_the_rules_can_be_turned_off(off: dict) -> None:
    out = await Ingestor(IngestSettings(**off)).extract(chat())
    assert not prefs_of(out.items) and out.items


async def test_with_an_llm_in_fine_mode_only_the_llms_preferences_are_stored() -> None:
    fake = FakeOpenAI()
    fake.chat_default = scripted_llm
    msgs = [
        ChatMessage("user", [Part("text", text="I prefer quiet hotels near the station.")]),
        ChatMessage("user", [Part("text", text="我更喜欢靠近会场的酒店")]),
    ]
    with fake.serve() as url:
        out = await Ingestor(IngestSettings(llm_base_url=url, llm_model="m")).extract(msgs, mode="fine")
    assert out.effective_mode == "fine"
    (pref,) = prefs_of(out.items)  # the scripted LLM reports lines saying "prefer"; the rules add nothing
    assert pref.memory == "I prefer quiet hotels near the station." and "extractor:rules" not in pref.tags


async def test_a_fine_batch_that_falls_back_gets_rule_preferences_at_its_own_indices() -> None:
    fake = FakeOpenAI()
    fake.chat_default = scripted_llm
    msgs = [ChatMessage("user", [Part("text", text=f"Fact number {k}.")]) for k in range(4)]
    msgs.append(ChatMessage("user", [Part("text", text="我讨厌排队。")]))  # alone in the second batch
    with fake.serve() as url:
        ing = Ingestor(IngestSettings(llm_base_url=url, llm_model="m", fine_batch_messages=4, llm_max_concurrency=1))
        fake.chat_replies = ["not json", "still not json", "not json", "still not json"]
        out = await ing.extract(msgs, mode="fine")  # both batches get invalid output twice
    assert out.effective_mode == "fast" and len(out.notices) == 2
    (pref,) = prefs_of(out.items)
    assert pref.memory == "讨厌排队" and pref.sources[0].message_index == 4
    assert {"fine:fallback", "mode:fast", "extractor:rules", "preference:dislike"} <= set(pref.tags)
