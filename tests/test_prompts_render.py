"""The prompt audio pipeline (prompts.render): real espeak-ng and ffmpeg, no network.

The whole catalog is rendered once per module; tests that change things work on a copy.
A missing espeak-ng or ffmpeg makes these tests fail, on purpose: CI installs both
(``apt-get install ffmpeg espeak-ng``).
"""
from __future__ import annotations

import io
import math
import shutil
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pydub import AudioSegment
from pydub.generators import Sine

from prompts import Catalog, load_catalog
from prompts import engines
from prompts.audio import EDGE_MS, TARGET_DBFS
from prompts.manifest import audio_path, load_manifest, save_manifest, sha256_bytes
from prompts.render import check, load_durations, main, render

# What Asterisk expects of each extension: sample rate, bytes per sample (all mono).
ASTERISK_FORMATS = {"sln": (8000, 2), "sln16": (16000, 2), "ulaw": (8000, 1)}
FULL_SCALE = 32768


def _ulaw_sample(byte: int) -> int:
    """G.711 μ-law → 16-bit linear (the table every decoder uses)."""
    byte = ~byte & 0xFF
    magnitude = ((((byte & 0x0F) << 3) + 0x84) << ((byte >> 4) & 7)) - 0x84
    return -magnitude if byte & 0x80 else magnitude


ULAW = [_ulaw_sample(b) for b in range(256)]


def samples(path: Path) -> list[int]:
    data = path.read_bytes()
    if path.suffix == ".ulaw":
        return [ULAW[b] for b in data]
    return list(struct.unpack(f"<{len(data) // 2}h", data))


def rms_dbfs(values: list[int]) -> float:
    return 20 * math.log10(math.sqrt(sum(v * v for v in values) / len(values)) / FULL_SCALE)


def leading_silence_ms(values: list[int], rate: int, floor: int = 300) -> float:
    return next(i for i, v in enumerate(values) if abs(v) > floor) * 1000 / rate


def correlation(a: list[int], b: list[int]) -> float:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    energy = math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b)) / energy


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The real catalog rendered from scratch with espeak-ng: (out dir, result)."""
    out = tmp_path_factory.mktemp("sounds")
    result = render(load_catalog(), out, engine="espeak", progress=False)
    assert not result.failed, result.failed
    return out, result


@pytest.fixture
def copy(full, tmp_path) -> Path:
    """A private copy of the full rendering, to change."""
    return Path(shutil.copytree(full[0], tmp_path / "sounds"))


def with_text(prompt_id: str, text: str) -> Catalog:
    catalog = load_catalog()
    prompts, fragments = dict(catalog.prompts), dict(catalog.fragments)
    (fragments if prompt_id in fragments else prompts)[prompt_id] = text
    return Catalog(prompts, fragments)


def file_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (out / "id" / "bpjs").iterdir()}


# --- the rendered audio -------------------------------------------------------------------

def test_the_manifest_declares_asterisks_formats(full):
    declared = load_manifest(full[0])["formats"]
    assert {ext: (d["sample_rate"], d["sample_width"]) for ext, d in declared.items()} \
        == ASTERISK_FORMATS
    assert all(d["channels"] == 1 for d in declared.values())
    assert (declared["sln"]["encoding"], declared["ulaw"]["encoding"]) == ("s16le", "mulaw")


def test_every_id_renders_audible_unclipped_files_of_the_declared_format(full):
    out, result = full
    catalog = load_catalog()
    manifest = load_manifest(out)
    assert set(result.rendered) == set(catalog.texts) == set(manifest["prompts"])
    for pid, text in catalog.texts.items():
        entry = manifest["prompts"][pid]
        assert entry["engine"] == "espeak"
        assert entry["text_sha256"] == sha256_bytes(text.encode())
        assert entry["duration_ms"] > 150, pid
        # Speech at the declared rate: espeak-ng at 165 wpm takes 60-120 ms per character.
        edges = 2 * EDGE_MS["fragment" if pid in catalog.fragments else "prompt"]
        assert 40 < (entry["duration_ms"] - edges) / len(text) < 180, pid
        decoded = {}
        for ext, (rate, width) in ASTERISK_FORMATS.items():
            path = audio_path(out, pid, ext)
            data = path.read_bytes()
            assert sha256_bytes(data) == entry["files"][ext]
            assert len(data) % width == 0
            assert abs(len(data) / width / rate * 1000 - entry["duration_ms"]) <= 20, (pid, ext)
            decoded[ext] = samples(path)
            peak = max(abs(v) for v in decoded[ext])
            assert rms_dbfs(decoded[ext]) > -30, (pid, ext)  # not silent
            assert peak < FULL_SCALE * 10 ** (-0.5 / 20), (pid, ext)  # headroom: not clipped
        # The three files are the same signal: sln16 taken at every other sample is sln, and
        # the μ-law file decodes to it.
        assert correlation(decoded["sln16"][::2], decoded["sln"]) > 0.9, pid
        assert correlation(decoded["ulaw"], decoded["sln"]) > 0.99, pid


def test_loudness_is_even_and_edges_are_fixed(full):
    out, _ = full
    catalog = load_catalog()
    for pid in catalog.texts:
        sln = samples(audio_path(out, pid, "sln"))
        assert abs(rms_dbfs(sln) - TARGET_DBFS) < 2.0, pid
        edge = EDGE_MS["fragment" if pid in catalog.fragments else "prompt"]
        assert edge - 2 <= leading_silence_ms(sln, 8000) <= edge + 15, pid
        assert edge - 2 <= leading_silence_ms(sln[::-1], 8000) <= edge + 15, pid
    assert EDGE_MS["fragment"] < EDGE_MS["prompt"]


def test_load_durations_reads_the_manifest(full, tmp_path):
    out, _ = full
    durations = load_durations(out)
    assert durations == {pid: e["duration_ms"] for pid, e in load_manifest(out)["prompts"].items()}
    assert set(durations) == set(load_catalog().texts)
    assert load_durations(tmp_path / "nothing-here") == {}


def test_list_prints_id_duration_engine_text(full, capsys):
    assert main(["list", "--out", str(full[0])]) == 0
    lines = capsys.readouterr().out.splitlines()
    greeting = next(line for line in lines if line.startswith("greeting "))
    seconds = load_durations(full[0])["greeting"] / 1000
    assert f"{seconds:.2f} s" in greeting and "espeak" in greeting
    assert load_catalog().text("greeting") in greeting


# --- rendering only what changed ----------------------------------------------------------

def test_a_second_render_changes_nothing(copy):
    before = file_bytes(copy)
    result = render(load_catalog(), copy, engine="espeak", progress=False)
    assert result.rendered == {} and len(result.unchanged) == len(load_catalog().texts)
    assert file_bytes(copy) == before


def test_a_changed_text_rerenders_exactly_that_id(copy):
    before = file_bytes(copy)
    catalog = with_text("num-7", "tujuh (diubah)")
    started = time.perf_counter()
    result = render(catalog, copy, engine="espeak", progress=False)
    assert time.perf_counter() - started < 10
    assert result.rendered == {"num-7": "espeak"}
    assert result.reasons["num-7"] == ["text changed"]
    after = file_bytes(copy)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"num-7.sln", "num-7.sln16", "num-7.ulaw"}
    assert check(catalog, copy) == []


def test_a_damaged_file_is_rerendered(copy):
    audio_path(copy, "greeting", "ulaw").write_bytes(b"\xff" * 800)
    result = render(load_catalog(), copy, engine="espeak", progress=False)
    assert list(result.rendered) == ["greeting"]
    assert check(load_catalog(), copy) == []


def test_an_id_removed_from_the_catalog_is_removed(copy):
    catalog = load_catalog()
    smaller = Catalog({k: v for k, v in catalog.prompts.items() if k != "goodbye"},
                      catalog.fragments)
    result = render(smaller, copy, engine="espeak", progress=False)
    assert result.removed == ["goodbye"] and result.rendered == {}
    assert not audio_path(copy, "goodbye", "sln").exists()
    assert "goodbye" not in load_manifest(copy)["prompts"]


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_a_recording_replaces_exactly_that_id_until_it_is_removed(copy, tmp_path, ext):
    """A 1.2 s tone at 44.1 kHz stereo with 300 ms of silence each side stands in for a
    studio recording: it must be converted, trimmed and padded like TTS."""
    before = file_bytes(copy)
    silence = AudioSegment.silent(300, frame_rate=44100)
    tone = Sine(440).to_audio_segment(duration=1200, volume=-12).set_frame_rate(44100)
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    recording = recordings / f"goodbye.{ext}"
    (silence + tone + silence).set_channels(2).export(recording, format=ext)

    result = render(load_catalog(), copy, engine="espeak", recordings_dir=recordings,
                    progress=False)
    assert result.rendered == {"goodbye": "recording"}
    entry = load_manifest(copy)["prompts"]["goodbye"]
    assert entry["engine"] == "recording"
    assert entry["source_sha256"] == sha256_bytes(recording.read_bytes())
    assert abs(entry["duration_ms"] - (1200 + 2 * EDGE_MS["prompt"])) <= 20
    after = file_bytes(copy)
    assert {n for n in before if before[n] != after[n]} == {
        "goodbye.sln", "goodbye.sln16", "goodbye.ulaw"}
    assert check(load_catalog(), copy, recordings) == []

    recording.unlink()
    assert check(load_catalog(), copy, recordings) != []
    result = render(load_catalog(), copy, engine="espeak", recordings_dir=recordings,
                    progress=False)
    assert result.rendered == {"goodbye": "espeak"}
    assert file_bytes(copy) == before  # back to the very same TTS audio


def test_a_new_recording_not_yet_rendered_fails_check(copy, tmp_path):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    Sine(440).to_audio_segment(duration=500).export(recordings / "greeting.wav", format="wav")
    problems = check(load_catalog(), copy, recordings)
    assert problems and all(p.startswith("greeting:") for p in problems)


def test_a_recording_with_a_loud_peak_is_limited_not_clipped(tmp_path):
    """Bringing this quiet recording to the target level would push its one loud burst far
    past full scale: the peak ceiling must win."""
    quiet = Sine(440).to_audio_segment(duration=1000, volume=-40)
    burst = Sine(440).to_audio_segment(duration=30, volume=-3)
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    (quiet + burst + quiet).export(recordings / "goodbye.wav", format="wav")
    result = render(SMALL, tmp_path / "out", engine="espeak", recordings_dir=recordings,
                    progress=False)
    assert result.rendered["goodbye"] == "recording"
    for ext in ASTERISK_FORMATS:
        values = samples(audio_path(tmp_path / "out", "goodbye", ext))
        assert max(abs(v) for v in values) < FULL_SCALE * 10 ** (-0.5 / 20), ext


# --- check --------------------------------------------------------------------------------

def run_check(out: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["check", "--out", str(out), "--recordings", str(out / "none"), *extra])
    return code, capsys.readouterr().err


def test_check_passes_on_a_fresh_render(full, capsys):
    assert run_check(full[0], capsys) == (0, "")


def test_check_fails_on_a_missing_file(copy, capsys):
    audio_path(copy, "num-5", "sln16").unlink()
    code, err = run_check(copy, capsys)
    assert code == 1
    assert "num-5: .sln16 missing" in err and "check failed: num-5" in err


def test_check_fails_on_a_stale_text(copy, tmp_path, capsys):
    toml = tmp_path / "catalog.toml"
    original = (Path(__file__).parents[1] / "prompts" / "catalog.toml").read_text("utf-8")
    toml.write_text(original.replace('num-9 = "sembilan"', 'num-9 = "sembilan!"'), "utf-8")
    code, err = run_check(copy, capsys, "--catalog", str(toml))
    assert code == 1
    assert "num-9: stale" in err and "check failed: num-9" in err


def _replace(out: Path, pid: str, ext: str, data: bytes) -> None:
    """Swap in a file and make the manifest's hash agree, so only the format check can tell."""
    audio_path(out, pid, ext).write_bytes(data)
    manifest = load_manifest(out)
    manifest["prompts"][pid]["files"][ext] = sha256_bytes(data)
    save_manifest(out, manifest)


@pytest.mark.parametrize("damage, expected", [
    ("8 kHz audio in the .sln16", "wrong sample rate"),
    ("a WAV file named .sln", "container header"),
    ("an odd number of bytes", "not a whole number"),
])
def test_check_fails_on_a_file_not_of_the_declared_format(copy, capsys, damage, expected):
    sln = audio_path(copy, "greeting", "sln").read_bytes()
    if damage.startswith("8 kHz"):
        _replace(copy, "greeting", "sln16", sln)
    elif damage.startswith("a WAV"):
        buf = io.BytesIO()
        AudioSegment(sln, sample_width=2, frame_rate=8000, channels=1).export(buf, format="wav")
        _replace(copy, "greeting", "sln", buf.getvalue())
    else:
        _replace(copy, "greeting", "sln", sln + b"\x00")
    code, err = run_check(copy, capsys)
    assert code == 1
    assert expected in err and "check failed: greeting" in err


def test_check_fails_on_a_changed_file(copy, capsys):
    data = bytearray(audio_path(copy, "num-1", "ulaw").read_bytes())
    data[100] ^= 0x55
    audio_path(copy, "num-1", "ulaw").write_bytes(bytes(data))
    code, err = run_check(copy, capsys)
    assert code == 1 and "num-1: .ulaw content differs" in err


def test_check_fails_on_a_stray_file_asterisk_could_play(copy, capsys):
    shutil.copy(audio_path(copy, "greeting", "sln"), audio_path(copy, "greeting", "wav"))
    code, err = run_check(copy, capsys)
    assert code == 1 and "greeting.wav: unexpected file" in err


# --- engines: gTTS without a network, and the fallback ------------------------------------

SMALL = Catalog({"greeting": "Selamat datang, Bapak/Ibu.", "goodbye": "Terima kasih."},
                {"num-1": "satu"})
TONE_MS = 600


class StandInGTTS:
    """Stands in for ``gtts.gTTS`` at its boundary (constructor + ``write_to_fp``), without a
    network: it writes a real MP3 made locally (a 600 ms tone, pydub → ffmpeg → MP3)."""

    calls: list[tuple[str, str]] = []
    mp3 = b""

    def __init__(self, text, lang="en", timeout=None, **_):
        self.calls.append((text, lang))

    def write_to_fp(self, fp):
        if not StandInGTTS.mp3:
            buf = io.BytesIO()
            Sine(300).to_audio_segment(duration=TONE_MS, volume=-10).set_frame_rate(24000) \
                .export(buf, format="mp3")
            StandInGTTS.mp3 = buf.getvalue()
        fp.write(self.mp3)


@pytest.fixture
def stand_in():
    StandInGTTS.calls = []
    return StandInGTTS


def test_gtts_renders_through_its_boundary(stand_in, tmp_path):
    """No network: gTTS itself is replaced by a stand-in returning a locally made real MP3."""
    result = render(SMALL, tmp_path, engine="gtts", gtts_factory=stand_in, progress=False)
    assert result.rendered == dict.fromkeys(SMALL.texts, "gtts")
    assert ("Selamat datang, Bapak atau Ibu.", "id") in stand_in.calls
    manifest = load_manifest(tmp_path)["prompts"]
    assert abs(manifest["num-1"]["duration_ms"] - (TONE_MS + 2 * EDGE_MS["fragment"])) <= 20
    assert check(SMALL, tmp_path) == []

    again = render(SMALL, tmp_path, engine="gtts", gtts_factory=stand_in, progress=False)
    assert again.rendered == {}
    switched = render(SMALL, tmp_path, engine="espeak", progress=False)
    assert switched.rendered == dict.fromkeys(SMALL.texts, "espeak")
    assert switched.reasons["num-1"] == ["engine gtts → espeak"]


def test_auto_uses_gtts_when_it_answers(stand_in, tmp_path):
    result = render(SMALL, tmp_path, gtts_factory=stand_in, progress=False)
    assert result.engine == "gtts" and set(result.rendered.values()) == {"gtts"}
    assert len(stand_in.calls) == 1 + len(SMALL.texts)  # the probe, then one per id


def test_auto_falls_back_to_espeak_for_the_whole_run_after_one_failure(tmp_path):
    from gtts.tts import gTTSError

    calls = []

    def unreachable(text, lang="en", timeout=None, **_):
        calls.append(text)
        raise gTTSError("Failed to connect. Probable cause: Unknown")

    result = render(SMALL, tmp_path, engine="auto", gtts_factory=unreachable, progress=False)
    assert len(calls) == 1
    assert result.engine == "espeak" and result.rendered == dict.fromkeys(SMALL.texts, "espeak")
    assert any("gTTS unreachable" in w for w in result.warnings)
    assert check(SMALL, tmp_path) == []


def test_auto_renders_an_id_gtts_fails_on_mid_run_with_espeak(stand_in, tmp_path):
    class FailsAfterTheProbe(stand_in):
        def write_to_fp(self, fp):
            if len(self.calls) > 1:
                raise ConnectionError("connection reset")
            super().write_to_fp(fp)

    result = render(SMALL, tmp_path, gtts_factory=FailsAfterTheProbe, progress=False)
    assert result.engine == "gtts" and not result.failed
    assert result.rendered == dict.fromkeys(SMALL.texts, "espeak")
    # Recorded as espeak, so the next auto run that reaches gTTS renders them again.
    again = render(SMALL, tmp_path, gtts_factory=stand_in, progress=False)
    assert again.rendered == dict.fromkeys(SMALL.texts, "gtts")


def test_auto_does_not_wait_for_a_gtts_that_hangs(tmp_path, monkeypatch):
    release = threading.Event()

    def hangs(text, lang="en", timeout=None, **_):
        release.wait(30)
        raise OSError("gave up")

    monkeypatch.setattr(engines, "GTTS_PROBE_TIMEOUT", 0.3)
    started = time.perf_counter()
    try:
        result = render(SMALL, tmp_path, gtts_factory=hangs, progress=False)
    finally:
        release.set()
    assert time.perf_counter() - started < 5
    assert result.engine == "espeak" and not result.failed


def test_an_explicit_gtts_that_fails_fails_the_ids(tmp_path):
    def unreachable(text, lang="en", timeout=None, **_):
        raise ConnectionError("no route to host")

    result = render(SMALL, tmp_path, engine="gtts", gtts_factory=unreachable, progress=False)
    assert set(result.failed) == set(SMALL.texts) and result.rendered == {}
    assert check(SMALL, tmp_path) != []


# --- the command line ---------------------------------------------------------------------

def test_render_command_uses_the_environment_and_reports(tmp_path, monkeypatch, capsys):
    toml = tmp_path / "catalog.toml"
    toml.write_text('[prompts]\ngreeting = "Halo."\n[fragments]\nnum-2 = "dua"\n', "utf-8")
    monkeypatch.setenv("IVR_SOUNDS_DIR", str(tmp_path / "env-sounds"))
    monkeypatch.setenv("IVR_TTS_ENGINE", "espeak")
    assert main(["render", "--catalog", str(toml), "--jobs", "2"]) == 0
    assert "rendered 2 (espeak 2), unchanged 0" in capsys.readouterr().out
    assert set(load_durations(tmp_path / "env-sounds")) == {"greeting", "num-2"}
    assert main(["check", "--catalog", str(toml)]) == 0


def test_the_programs_are_installed():
    """CI must provide them: the pipeline cannot render without them."""
    for program in ("ffmpeg", "espeak-ng"):
        assert shutil.which(program), f"{program} missing: apt-get install ffmpeg espeak-ng"
    voices = subprocess.run(["espeak-ng", "--voices=id"], capture_output=True, text=True).stdout
    assert " id " in voices
