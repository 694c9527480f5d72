"""Reading Slack payloads at the edge: plain text, which events are a person writing, button presses."""

from __future__ import annotations

from bot.slack.blocks import SECTION_LIMIT, parse_thread_key, reply_blocks, split_sections, thread_key
from bot.slack.events import ButtonPress, Skip, SlackPost, read_assistant_thread, read_button, read_post
from bot.slack.text import strip_mention, to_plain_text, without_pings
from tests.fakes import slack_payloads as sp

BOT = sp.BOT_USER_ID


def test_plain_text_reads_like_slack_shows_it() -> None:
    raw = ("<@U0BOT> hi <@U0ANN|ann>, see <#C0GEN|general> and <https://x.test/a?b=1&amp;c=2|the docs> "
           "or <mailto:help@x.test|help@x.test>; cc <!here> <!subteam^S0SUP|@support> &lt;tag&gt; a &amp; b")
    assert to_plain_text(raw, bot_user_id=BOT) == (
        "hi @ann, see #general and the docs (https://x.test/a?b=1&c=2) or help@x.test; "
        "cc @here @support <tag> a & b")


def test_the_bots_own_mention_is_removed_wherever_it_is() -> None:
    assert strip_mention("can you help <@U0BOT> please", BOT) == "can you help please"
    assert strip_mention("<@U0BOT>", BOT) == ""
    assert to_plain_text("<@U0OTHER> knows", bot_user_id=BOT) == "@U0OTHER knows"


def test_pings_are_defused_in_replies() -> None:
    defused = without_pings("<!here> <!channel|channel> <!everyone> <!subteam^S0SUP|@support> <@U0ANN>")
    assert "<!" not in defused and "<@U0ANN>" in defused
    assert "@\u2060here" in defused and "@\u2060support" in defused


def _post(event: dict[str, object]) -> SlackPost | Skip:
    return read_post(sp.event_callback(event), bot_user_id=BOT, bot_id=sp.BOT_ID)


def test_message_and_app_mention_of_one_message_give_the_same_inbox_key() -> None:
    ts = "1700000000.000200"
    message = _post(sp.message_event("C0RANDOM", "U0ANN", "<@U0BOT> export fails", ts))
    mention = _post(sp.app_mention_event("C0RANDOM", "U0ANN", "<@U0BOT> export fails", ts))
    assert isinstance(message, SlackPost) and isinstance(mention, SlackPost)
    assert message.event_id != mention.event_id
    assert message.inbound().dedupe_key == mention.inbound().dedupe_key == f"T0TEAM:C0RANDOM:{ts}"
    assert message.mentions_bot and mention.mentions_bot and message.text == mention.text == "export fails"


def test_bots_edits_deletes_and_joins_are_not_a_person_writing() -> None:
    skipped = [
        sp.bot_message_event("C0SUPPORT", "deploy finished"),
        sp.message_event("C0SUPPORT", BOT, "my own reply", bot_id=sp.BOT_ID),
        sp.message_event("C0SUPPORT", "U0OTHERBOT", "another app", bot_id="B0OTHER"),
        sp.message_changed_event("C0SUPPORT", "1700000000.000100", "new", user="U0ANN", previous_text="old"),
        sp.message_deleted_event("C0SUPPORT", "1700000000.000100", user="U0ANN", previous_text="old"),
        sp.channel_join_event("C0SUPPORT", "U0ANN"),
        sp.message_event("C0SUPPORT", "U0ANN", "<@U0BOT>"),
    ]
    for event in skipped:
        assert isinstance(_post(event), Skip), event


def test_files_and_broadcast_replies_are_still_a_person_writing() -> None:
    shared = _post(sp.message_event("C0SUPPORT", "U0ANN", "see screenshot", subtype="file_share", files=[]))
    broadcast = _post(sp.message_event("C0SUPPORT", "U0ANN", "also this", thread_ts="1700000000.000100",
                                       subtype="thread_broadcast"))
    assert isinstance(shared, SlackPost) and shared.thread_ts is None
    assert isinstance(broadcast, SlackPost) and broadcast.thread_ts == "1700000000.000100"


def test_dm_threads_are_assistant_threads_and_top_level_dms_are_not() -> None:
    top = _post(sp.message_event("D0ANN", "U0ANN", "hello there, billing question"))
    threaded = _post(sp.message_event("D0ANN", "U0ANN", "follow-up", thread_ts="1700000000.000100"))
    assert isinstance(top, SlackPost) and top.in_dm and not top.inbound().assistant_thread
    assert isinstance(threaded, SlackPost) and threaded.inbound().assistant_thread


def test_button_press_and_assistant_thread_are_read_from_their_payloads() -> None:
    press = read_button(sp.block_actions("escalation_ack", "7", user_id="U0ON", channel="C0PAGES",
                                         message_ts="1700000000.000300"))
    assert press == ButtonPress("escalation_ack", "7", "U0ON", "T0TEAM", "C0PAGES", "1700000000.000300", None)
    thread = read_assistant_thread(sp.event_callback(
        sp.assistant_thread_started_event("U0ANN", "D0ANN", "1700000000.000400")))
    assert thread is not None and (thread.channel, thread.thread_ts) == ("D0ANN", "1700000000.000400")


def test_long_replies_are_cut_into_sections_slack_accepts() -> None:
    text = "\n\n".join(f"paragraph {i} " + "x" * 900 for i in range(6))
    pieces = split_sections(text)
    assert len(pieces) > 1 and all(len(piece) <= SECTION_LIMIT for piece in pieces)
    assert "".join(pieces).replace("\n", "") == text.replace("\n", "")
    blocks = reply_blocks(text, request_value=thread_key("T1", "C1", "1.2"))
    assert blocks[-1]["elements"][0]["value"] == "T1:C1:1.2"
    assert parse_thread_key("T1:C1:1.2") == ("T1", "C1", "1.2") and parse_thread_key("nonsense") is None
