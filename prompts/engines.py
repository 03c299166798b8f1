"""Where a prompt's speech comes from: espeak-ng (offline), gTTS (network) or a studio recording.

Engines return the source audio as bytes plus its container format; ``prompts.audio`` turns
that into the Asterisk files. gTTS is imported only when used.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import queue
import re
import threading
from pathlib import Path
from typing import Callable

ESPEAK = "espeak"
GTTS = "gtts"
RECORDING = "recording"
AUTO = "auto"
TTS_ENGINES = (ESPEAK, GTTS)

# Speed 165 wpm (espeak's default is 175): a little slower reads better on an 8 kHz phone
# line; 150 made the path to the status 3-4 s longer with no gain in clarity that a
# listen to a rendered call could hear (numbers and dates stay word by word fragments).
# -b 1: the text on stdin is UTF-8.
ESPEAK_ARGS = ("-v", "id", "-s", "165", "-b", "1", "--stdout")
GTTS_LANG = "id"
GTTS_TIMEOUT = 15.0
# auto tries gTTS once with this budget (DNS included), then uses espeak-ng for the whole run.
GTTS_PROBE_TIMEOUT = 3.0
GTTS_PROBE_TEXT = "halo"

RECORDING_EXTS = frozenset(
    {"wav", "mp3", "ogg", "oga", "opus", "flac", "m4a", "aac", "aif", "aiff", "wma", "webm"})

# The catalog text is also the transcript, so it stays as written; these rewrite what the
# engines would misread. espeak-ng reads "Bapak/Ibu" as "Bapak garis miring Ibu", English
# loanwords with English spelling-to-sound rules it lacks, and "ATM" as one word.
_SLASH = (re.compile(r"(?<=\w)/(?=\w)"), " atau ")
_ESPEAK_WORDS = {"ATM": "A T M", "Mobile": "Mobail", "mobile": "mobail", "account": "akun"}


class EngineError(Exception):
    pass


def spoken_text(text: str, engine: str) -> str:
    """What the engine is asked to say for the catalog ``text``."""
    text = _SLASH[0].sub(_SLASH[1], text)
    if engine == ESPEAK:
        text = re.sub(r"\w+", lambda m: _ESPEAK_WORDS.get(m.group(), m.group()), text)
    return text


def tts_source_sha256(text: str, engine: str) -> str:
    """Identifies a TTS rendering: a change of engine settings or lexicon re-renders."""
    settings = {ESPEAK: ESPEAK_ARGS, GTTS: GTTS_LANG}[engine]
    key = json.dumps([engine, settings, spoken_text(text, engine)], ensure_ascii=False)
    return hashlib.sha256(key.encode()).hexdigest()


async def espeak(text: str) -> bytes:
    """WAV bytes (22 050 Hz mono) spoken by espeak-ng, run as an asynchronous subprocess."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "espeak-ng", *ESPEAK_ARGS, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        raise EngineError("espeak-ng is not installed (apt-get install espeak-ng)") from None
    out, err = await proc.communicate(spoken_text(text, ESPEAK).encode("utf-8"))
    if proc.returncode or len(out) <= 44:  # 44: a WAV header and no samples
        raise EngineError(f"espeak-ng failed ({proc.returncode}): {err.decode(errors='replace')}")
    return out


GttsFactory = Callable[..., object]


class Gtts:
    """Google Translate's TTS through gTTS. ``factory`` is the gTTS class or a stand-in with
    its interface: ``factory(text, lang=..., timeout=...).write_to_fp(binary_file)``."""

    def __init__(self, factory: GttsFactory | None = None, timeout: float = GTTS_TIMEOUT) -> None:
        if factory is None:
            from gtts import gTTS as factory
        self.factory = factory
        self.timeout = timeout

    def synthesize(self, text: str) -> bytes:
        """MP3 bytes (blocking network I/O: call it in a thread)."""
        buf = io.BytesIO()
        self.factory(spoken_text(text, GTTS), lang=GTTS_LANG, timeout=self.timeout).write_to_fp(buf)
        if not buf.getvalue():
            raise EngineError("gTTS returned no audio")
        return buf.getvalue()

    def reachable(self, budget: float | None = None) -> bool:
        """One short request. Runs in a daemon thread because requests' timeout does not bound
        DNS resolution: an unreachable resolver must not hold the run for tens of seconds."""
        answer: queue.Queue[bool] = queue.Queue()

        def attempt() -> None:
            try:
                self.synthesize(GTTS_PROBE_TEXT)
                answer.put(True)
            except Exception:  # any failure means "not usable now"
                answer.put(False)

        threading.Thread(target=attempt, daemon=True, name="gtts-probe").start()
        try:
            return answer.get(timeout=GTTS_PROBE_TIMEOUT if budget is None else budget)
        except queue.Empty:
            return False


def find_recordings(recordings_dir: Path | None, ids,
                    ) -> tuple[dict[str, Path], dict[str, list[Path]], list[Path]]:
    """Recordings ``<dir>/<id>.<audio ext>`` by id; ids with several files (ambiguous: none
    is used); audio files that name no catalog id (probably a typo)."""
    if recordings_dir is None or not recordings_dir.is_dir():
        return {}, {}, []
    ids = set(ids)
    found: dict[str, list[Path]] = {}
    unknown = []
    for path in sorted(recordings_dir.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower().lstrip(".") not in RECORDING_EXTS:
            continue
        if path.stem in ids:
            found.setdefault(path.stem, []).append(path)
        else:
            unknown.append(path)
    single = {pid: paths[0] for pid, paths in found.items() if len(paths) == 1}
    ambiguous = {pid: paths for pid, paths in found.items() if len(paths) > 1}
    return single, ambiguous, unknown
