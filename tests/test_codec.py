"""The FastAGI codec on bytes alone: header lines, reply lines, command quoting."""
import pytest

from ivr.agi.codec import HANGUP, CommandError, HeaderError, ProtocolError, Reply, ReplyReader, \
    format_command, parse_header_line


def feed_all(lines):
    reader = ReplyReader()
    return [event for line in lines if (event := reader.feed(line)) is not None]


@pytest.mark.parametrize("line, expected", [
    ("agi_network: yes", ("agi_network", "yes")),
    ("agi_accountcode: ", ("agi_accountcode", "")),
    ("agi_accountcode:", ("agi_accountcode", "")),
    ("agi_channel: Local/s@ivr-00000000;2", ("agi_channel", "Local/s@ivr-00000000;2")),
    ("agi_arg_1: a: b", ("agi_arg_1", "a: b")),
])
def test_header_lines(line, expected):
    assert parse_header_line(line) == expected


def test_empty_line_ends_the_header_block():
    assert parse_header_line("") is None


@pytest.mark.parametrize("line", ["GET / HTTP/1.1", "no colon here", "x_agi: 1"])
def test_malformed_header_lines_are_the_peers_fault(line):
    with pytest.raises(HeaderError):
        parse_header_line(line)


@pytest.mark.parametrize("line, code, result, data, endpos", [
    ("200 result=0", 200, "0", None, None),
    ("200 result=-1 endpos=0", 200, "-1", None, 0),
    ("200 result=49 endpos=3520", 200, "49", None, 3520),
    ("200 result=0001234567890", 200, "0001234567890", None, None),
    ("200 result= (timeout)", 200, "", "timeout", None),
    ("200 result=12 (timeout)", 200, "12", "timeout", None),
    ("200 result=1 (Local/s@ivr-00000000;2)", 200, "1", "Local/s@ivr-00000000;2", None),
    ("200 result=1 (a (nested) value)", 200, "1", "a (nested) value", None),
])
def test_success_replies(line, code, result, data, endpos):
    (reply,) = feed_all([line])
    assert (reply.code, reply.result, reply.data, reply.endpos) == (code, result, data, endpos)


def test_reply_numbers():
    assert Reply(200, "-1").number == -1 and Reply(200, "").number is None


def test_dead_channel_and_unknown_command_are_one_line_replies():
    replies = feed_all(["511 Command Not Permitted on a dead channel or intercept routine",
                        "510 Invalid or unknown command"])
    assert [r.code for r in replies] == [511, 510]


def test_hangup_is_an_event_not_a_reply():
    assert feed_all(["HANGUP", "200 result=1"]) == [HANGUP, Reply(200, "1", None, None,
                                                                  "result=1")]


def test_a_520_block_is_one_reply():
    events = feed_all(["520-Invalid command syntax.  Proper usage follows:",
                       " Usage: WAIT FOR DIGIT <timeout>", "520 End of proper usage.",
                       "200 result=0"])
    assert [e.code for e in events] == [520, 200]
    assert "Usage: WAIT FOR DIGIT" in events[0].text


def test_interim_100_is_skipped():
    assert [e.code for e in feed_all(["100 result=0 Trying...", "200 result=0"])] == [200]


@pytest.mark.parametrize("line", ["garbage", "200 nothing", "HTTP/1.1 200 OK", "201-x"])
def test_lines_that_are_not_fastagi_are_the_peers_fault(line):
    with pytest.raises(ProtocolError):
        feed_all([line])


@pytest.mark.parametrize("args, wire", [
    (("ANSWER",), b"ANSWER\n"),
    (("STREAM FILE", "bpjs/greeting", ""), b'STREAM FILE bpjs/greeting ""\n'),
    (("STREAM FILE", "bpjs/greeting", "0123456789*#"),
     b"STREAM FILE bpjs/greeting 0123456789*#\n"),
    (("WAIT FOR DIGIT", 5000), b"WAIT FOR DIGIT 5000\n"),
    (("SET VARIABLE", "__IVR_OUTCOME", "a b"), b'SET VARIABLE __IVR_OUTCOME "a b"\n'),
    (("SET VARIABLE", "X", 'say "hi"\\'), b'SET VARIABLE X "say \\"hi\\"\\\\"\n'),
])
def test_commands_are_quoted_where_needed(args, wire):
    assert format_command(*args) == wire


def test_a_line_break_in_an_argument_is_our_misuse():
    with pytest.raises(CommandError):
        format_command("SET VARIABLE", "X", "a\nANSWER")
