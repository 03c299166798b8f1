"""An Asterisk 22 emulator for FastAGI, with a caller on the line.

It connects to a FastAGI server as Asterisk does, sends the header block of a real call and
answers commands as Asterisk 22 answers them (``../shared/notes/asterisk.md``): a missing
sound is ``200 result=-1 endpos=0``; a key that interrupts a playback is its ASCII code; a
caller who hangs up makes the playback in progress end with ``result=-1``, then ``HANGUP``
comes before the next reply, and input commands get ``511`` while ``SET VARIABLE`` still works.
``GET DATA`` answers the digits without the ``#`` that ended them, ``(timeout)`` after a
pause, ``result=`` for a lone ``#`` and ``-1`` for a missing prompt (``""`` plays nothing);
``EXEC Read`` plays an ``&`` list, skips missing sounds silently, and leaves ``READSTATUS``
and its variable for ``GET FULL VARIABLE`` (all observed on Asterisk 22.10.1).

It serves ``ivr call`` (a person at a terminal), the protocol tests and the load benchmark.
It is a stand-in for fast tests, not for the real Asterisk the integration tests also use.
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol


HANG_UP = "hang up"
DEAD = "511 Command Not Permitted on a dead channel or intercept routine"
USAGE = ("520-Invalid command syntax.  Proper usage follows:\n"
         "Usage: see 'agi show commands'\n"
         "520 End of proper usage.")

_ids = itertools.count(1)
_ASK = object()              # no key yet: ask the caller
_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class Caller(Protocol):
    """The person on the line: what they do while a prompt plays and when the IVR waits."""
    def on_prompt(self, sound: str, interruptible: bool) -> str | None: ...
    def on_wait(self) -> str | None | Awaitable[str | None]: ...


class ScriptedCaller:
    """Types groups of keys, one group each time the IVR asks for input.

    ``"1 0001234567890# 1 17081990"``: a group starts when the IVR waits for a key after
    having played something new; when a group is used up the caller stays silent until the
    IVR asks again (so ``0001234567890`` without ``#`` ends with a pause). ``_`` is a round
    of silence, ``h`` hangs up during the next prompt (or wait). With ``barge_in`` the
    caller starts each group while the question is still playing.
    """

    def __init__(self, keys: str, *, barge_in: bool = False) -> None:
        self.groups = keys.split()
        self.barge_in = barge_in
        self._current = ""
        self._asked = True   # the IVR played something since the last group began

    def _take(self) -> str | None:
        """Start the next group, if the IVR has asked; its first action."""
        if not self._asked or not self.groups:
            return None
        self._asked = False
        group = self.groups.pop(0)
        if group.lower() == "h":
            return HANG_UP
        if group == "_":
            return None
        self._current = group[1:]
        return group[0]

    def _next(self) -> str | None:
        if self._current:
            key, self._current = self._current[0], self._current[1:]
            return key
        return self._take()

    def on_prompt(self, sound: str, interruptible: bool) -> str | None:
        self._asked = True
        if self.groups and self.groups[0].lower() == "h" and not self._current:
            return self._take()
        if self.barge_in and interruptible:
            return self._next()
        return None

    def on_wait(self) -> str | None:
        return self._next()


@dataclass
class EmulatedCall:
    """What happened on one emulated call."""
    call_id: str
    headers: dict[str, str]
    sounds: list[str] = field(default_factory=list)        # every STREAM FILE, in order
    commands: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)     # set by the AGI
    app_variables: dict[str, str] = field(default_factory=dict)  # set by applications (Read)
    hung_up: bool = False
    keys_sent: str = ""
    ended: str = ""          # how the session ended: "server closed", "limit", ...


def asterisk_headers(call_id: str, *, caller: str, script: str = "hotline",
                     host: str = "127.0.0.1", port: int = 4573, extension: str = "1500400",
                     language: str = "id") -> dict[str, str]:
    """The header block Asterisk 22.10.1 sends (observed), for one call."""
    return {
        "agi_network": "yes",
        "agi_network_script": script,
        "agi_request": f"agi://{host}:{port}/{script}",
        "agi_channel": f"PJSIP/caller-{call_id.replace('.', '')[-8:]:0>8}",
        "agi_language": language,
        "agi_type": "PJSIP",
        "agi_uniqueid": call_id,
        "agi_version": "22.10.1+dfsg+~cs6.17.60671434-1",
        "agi_callerid": caller,
        "agi_calleridname": "unknown",
        "agi_callingpres": "0",
        "agi_callingani2": "0",
        "agi_callington": "0",
        "agi_callingtns": "0",
        "agi_dnid": extension,
        "agi_rdnis": "unknown",
        "agi_context": "hotline",
        "agi_extension": extension,
        "agi_priority": "3",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
        "agi_threadid": "139747600955072",
    }


def encode_headers(headers: dict[str, str]) -> bytes:
    return "".join(f"{k}: {v}\n" for k, v in headers.items()).encode() + b"\n"


def split_command(command: str) -> list[str]:
    """A command line's words as Asterisk's argument parser sees them. The common lines
    (no quotes but a trailing ``""``) are split directly; anything else goes to ``shlex``."""
    head, empty_last = command, command.endswith(' ""')
    if empty_last:
        head = command[:-3]
    if '"' in head or "'" in head or "\\" in head:
        return shlex.split(command)
    words = head.split()
    if empty_last:
        words.append("")
    return words


def new_call_id() -> str:
    return f"{time.time():.0f}.{next(_ids)}"


class AsteriskEmulator:
    def __init__(self, host: str, port: int, caller: Caller, *, caller_id: str = "081234567890",
                 language: str = "id", call_id: str | None = None,
                 missing: Callable[[str], bool] | None = None,
                 max_commands: int = 5000, timeout: float = 60.0) -> None:
        self.host, self.port = host, port
        self.caller = caller
        self.call = EmulatedCall(call_id or new_call_id(), {})
        self.call.headers = asterisk_headers(self.call.call_id, caller=caller_id, host=host,
                                             port=port, language=language)
        self.missing = missing or (lambda sound: False)
        self.max_commands = max_commands
        self.timeout = timeout
        self._hangup_line_due = False
        self._handlers = {
            "STREAM FILE": self._stream_file, "WAIT FOR DIGIT": self._wait_for_digit,
            "SET VARIABLE": self._set_variable, "GET VARIABLE": self._get_variable,
            "CHANNEL STATUS": self._channel_status, "ANSWER": self._answer,
            "VERBOSE": self._always_one, "NOOP": self._noop,
            "GET DATA": self._get_data, "EXEC": self._exec,
            "GET FULL VARIABLE": self._get_full_variable}

    async def run(self) -> EmulatedCall:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(encode_headers(self.call.headers))
            async with asyncio.timeout(self.timeout):
                await self._serve(reader, writer)
        except TimeoutError:
            self.call.ended = "emulator timeout"
        finally:
            writer.close()
        return self.call

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while len(self.call.commands) < self.max_commands:
            line = await reader.readline()
            if not line:
                self.call.ended = "server closed"
                return
            reply = self.reply_to(line.decode().rstrip("\n"))
            if not isinstance(reply, str):
                reply = await reply
            writer.write(reply.encode() + b"\n")
            await writer.drain()
        self.call.ended = "command limit"

    def reply_to(self, command: str) -> str | Awaitable[str]:
        """What Asterisk writes back for one command line (without the final newline): its
        reply, after an unsolicited ``HANGUP`` line when the caller has just hung up.

        No I/O here, so the load benchmark drives the same logic from its own protocol.
        The answer is a string, or an awaitable only when the caller answers
        asynchronously (a person at a terminal)."""
        self.call.commands.append(command)
        reply = self.respond(command)
        if isinstance(reply, str):
            return self._after_hangup_line(reply)
        return self._later(reply)

    async def _later(self, reply: Awaitable[str]) -> str:
        return self._after_hangup_line(await reply)

    def _after_hangup_line(self, reply: str) -> str:
        if self._hangup_line_due:
            self._hangup_line_due = False
            return "HANGUP\n" + reply
        return reply

    def _hang_up(self) -> None:
        self.call.hung_up = True
        self._hangup_line_due = True

    def respond(self, command: str) -> str | Awaitable[str]:
        """The reply to one command (an awaitable only for an asynchronous caller)."""
        try:
            words = split_command(command)
        except ValueError:
            return USAGE
        for length in (2, 3, 1):
            handler = self._handlers.get(" ".join(words[:length]).upper())
            if handler is not None:
                try:
                    return handler(words[length:])
                except (IndexError, ValueError):
                    return USAGE
        return "510 Invalid or unknown command"

    def _stream_file(self, args: list[str]) -> str:
        sound, escapes = args[0], args[1]
        if self.call.hung_up:
            return DEAD
        if self.missing(sound):
            return "200 result=-1 endpos=0"
        self.call.sounds.append(sound)
        action = self.caller.on_prompt(sound, bool(escapes))
        if action == HANG_UP:
            self._hang_up()
            return "200 result=-1 endpos=1760"
        key = action if action is not None and action in escapes else None
        if key is not None:
            self.call.keys_sent += key
        return f"200 result={ord(key) if key else 0} endpos={800 if key else 16000}"

    def _wait_for_digit(self, args: list[str]) -> str | Awaitable[str]:
        int(args[0])
        if self.call.hung_up:
            return "200 result=-1"
        action = self.caller.on_wait()
        if inspect.isawaitable(action):
            return self._key_later(action)
        return self._key_reply(action)

    async def _key_later(self, action: Awaitable[str | None]) -> str:
        return self._key_reply(await action)

    def _key_reply(self, action: str | None) -> str:
        if action == HANG_UP:
            self._hang_up()
            return "200 result=-1"
        if action is None:
            return "200 result=0"
        self.call.keys_sent += action
        return f"200 result={ord(action)}"

    def _get_data(self, args: list[str]) -> str | Awaitable[str]:
        sound = args[0]
        int(args[1]) if len(args) > 1 else 0
        max_keys = int(args[2]) if len(args) > 2 else 1024
        if self.call.hung_up:
            return DEAD
        if sound and self.missing(sound):
            return "200 result=-1"
        action = _ASK
        if sound:
            self.call.sounds.append(sound)
            action = self.caller.on_prompt(sound, True)
            action = _ASK if action is None else action
        return self._collect("", max_keys, "#", action, self._get_data_reply)

    @staticmethod
    def _get_data_reply(keys: str, ended: str) -> str:
        if ended == HANG_UP:
            return "200 result=-1"
        return f"200 result={keys} (timeout)" if ended == "timeout" else f"200 result={keys}"

    def _collect(self, keys: str, max_keys: int, terminators: str, action: object,
                 finish: Callable[[str, str], str]) -> str | Awaitable[str]:
        """Keys from the caller until ``max_keys``, a terminator, a pause or a hang-up;
        ``finish(keys, how)`` makes the reply."""
        while len(keys) < max_keys:
            if action is _ASK:
                action = self.caller.on_wait()
                if inspect.isawaitable(action):
                    return self._collect_later(keys, max_keys, terminators, action, finish)
            if action == HANG_UP:
                self._hang_up()
                return finish(keys, HANG_UP)
            if action is None:
                return finish(keys, "timeout")
            self.call.keys_sent += action
            if action in terminators:
                return finish(keys, "terminator")
            keys += action
            action = _ASK
        return finish(keys, "complete")

    async def _collect_later(self, keys: str, max_keys: int, terminators: str,
                             pending: Awaitable, finish: Callable[[str, str], str]) -> str:
        reply = self._collect(keys, max_keys, terminators, await pending, finish)
        while not isinstance(reply, str):
            reply = await reply
        return reply

    def _exec(self, args: list[str]) -> str | Awaitable[str]:
        if args[0].lower() != "read":
            return "200 result=-2"
        options = (args[1] if len(args) > 1 else "").split(",")
        variable = options[0]
        sounds = [s for s in (options[1] if len(options) > 1 else "").split("&") if s]
        max_keys = int(options[2]) if len(options) > 2 and options[2] else 255
        flags = options[3] if len(options) > 3 else ""
        terminators = "" if "t()" in flags else "#"

        def finish(keys: str, ended: str) -> str:
            status = {HANG_UP: "HANGUP", "timeout": "TIMEOUT" if not keys else "OK"}
            self.call.app_variables["READSTATUS"] = status.get(ended, "OK")
            self.call.app_variables[variable] = keys
            return "200 result=-1" if ended == HANG_UP else "200 result=0"

        if self.call.hung_up:
            return finish("", HANG_UP)
        action = _ASK
        for sound in sounds:
            if self.missing(sound):
                continue
            self.call.sounds.append(sound)
            action = self.caller.on_prompt(sound, True)
            if action is not None:
                break
            action = _ASK
        return self._collect("", max_keys, terminators, action, finish)

    def _get_full_variable(self, args: list[str]) -> str:
        known = {**self.call.app_variables, **self.call.variables}
        value = _VARIABLE.sub(lambda m: known.get(m[1], ""), args[0])
        return f"200 result=1 ({value})"

    def _set_variable(self, args: list[str]) -> str:
        name, value = args[0], args[1]
        self.call.variables[name.lstrip("_")] = value
        return "200 result=1"

    def _get_variable(self, args: list[str]) -> str:
        value = self.call.variables.get(args[0])
        return "200 result=0" if value is None else f"200 result=1 ({value})"

    def _channel_status(self, args: list[str]) -> str:
        return DEAD if self.call.hung_up else "200 result=6"

    def _answer(self, args: list[str]) -> str:
        return DEAD if self.call.hung_up else "200 result=0"

    def _always_one(self, args: list[str]) -> str:
        return "200 result=1"

    def _noop(self, args: list[str]) -> str:
        return "200 result=0"


async def place_call(host: str, port: int, keys: str, **kwargs) -> EmulatedCall:
    """One scripted call: ``await place_call("127.0.0.1", 4573, "1 0001234567890# 1 17081990")``."""
    barge_in = kwargs.pop("barge_in", False)
    return await AsteriskEmulator(host, port, ScriptedCaller(keys, barge_in=barge_in),
                                  **kwargs).run()
