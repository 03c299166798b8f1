"""``ivr prompts``: render the catalog into the sound files Asterisk plays, check them, list them.

    ivr prompts render [--out DIR] [--engine auto|gtts|espeak] [--recordings DIR] [--jobs N]
    ivr prompts check  [--out DIR] [--recordings DIR]
    ivr prompts list   [--out DIR]

Output: ``<out>/id/bpjs/<id>.{sln,sln16,ulaw}`` and ``<out>/manifest.json`` (format
declarations; per id the text hash, engine, source hash, duration and file hashes). A
recording ``<recordings>/<id>.<wav|mp3|ogg|flac|...>`` replaces the TTS for its id. ``render``
redoes only what changed: the text, the engine, a recording added, changed or removed, the
processing settings, or a file missing or altered.

Work is spread over ``--jobs`` cores: espeak-ng runs as concurrent asynchronous subprocesses,
gTTS requests in threads, and the pydub/ffmpeg work in a process pool, all driven by one
event loop that only waits.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import Catalog, load_catalog, parse_catalog
from .engines import (AUTO, ESPEAK, GTTS, RECORDING, Gtts, GttsFactory, espeak, find_recordings,
                      tts_source_sha256)
from .manifest import (FORMATS, MANIFEST_NAME, audio_path, file_problem, load_durations, load_manifest,
                       save_manifest, sha256_bytes, sha256_file, sound_dir)

__all__ = ["main", "render", "check", "list_prompts", "load_durations", "RenderResult",
           "RenderError"]

DEFAULT_OUT = "var/sounds"
DEFAULT_RECORDINGS = "prompts/recordings"
GTTS_CONCURRENCY = 4  # parallel requests to Google; they wait on the network, not the CPU


class RenderError(Exception):
    """The run cannot start (a missing program, a bad argument)."""


@dataclass
class Job:
    prompt_id: str
    kind: str  # "prompt" or "fragment"
    text: str
    engine: str
    source_sha256: str
    processing: str
    recording: Path | None
    reasons: list[str]


@dataclass
class RenderResult:
    engine: str | None  # the TTS engine of this run; None when every id has a recording
    rendered: dict[str, str] = field(default_factory=dict)  # id → engine that made it
    reasons: dict[str, list[str]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        engines = ", ".join(f"{e} {n}" for e, n in sorted(Counter(self.rendered.values()).items()))
        return (f"rendered {len(self.rendered)}{f' ({engines})' if engines else ''}, "
                f"unchanged {len(self.unchanged)}, removed {len(self.removed)}, "
                f"failed {len(self.failed)} in {self.seconds:.1f} s")


def _catalog(catalog: Catalog | str | os.PathLike | None) -> Catalog:
    if catalog is None:
        return load_catalog()
    if isinstance(catalog, Catalog):
        return catalog
    return parse_catalog(Path(catalog).read_text("utf-8"))


def _kind(catalog: Catalog, prompt_id: str) -> str:
    return "fragment" if prompt_id in catalog.fragments else "prompt"


def _stale_reasons(entry: dict | None, out_dir: Path, job: Job) -> list[str]:
    """Why the rendered files of ``job.prompt_id`` no longer match what it should be."""
    if not entry:
        return ["new"]
    reasons = []
    if entry.get("text_sha256") != sha256_bytes(job.text.encode()):
        reasons.append("text changed")
    if entry.get("engine") != job.engine:
        reasons.append(f"engine {entry.get('engine')} → {job.engine}")
    elif entry.get("source_sha256") != job.source_sha256 and (job.recording or not reasons):
        # A TTS source hash covers the text too: it says something new only when the text is
        # unchanged (a lexicon or voice setting changed).
        reasons.append("recording changed" if job.recording else "voice settings changed")
    if entry.get("processing") != job.processing:
        reasons.append("processing settings changed")
    for ext, fmt in FORMATS.items():
        sha = entry.get("files", {}).get(ext)
        why = ("not rendered" if sha is None else
               file_problem(audio_path(out_dir, job.prompt_id, ext), fmt,
                            entry.get("duration_ms", 0), sha))
        if why:
            reasons.append(f".{ext} {why}")
    return reasons


def _resolve_engine(requested: str, gtts: Gtts | None) -> str:
    """The TTS engine of the whole run: auto probes gTTS once and falls back to espeak-ng."""
    if requested == AUTO:
        return GTTS if gtts.reachable() else ESPEAK
    return requested


async def _execute(jobs: list[Job], out_dir: Path, requested: str, gtts: Gtts | None,
                   n_jobs: int, pool: ProcessPoolExecutor, progress: bool | None) -> list:
    from tqdm import tqdm

    from . import audio

    loop = asyncio.get_running_loop()
    limits = {ESPEAK: asyncio.Semaphore(n_jobs), GTTS: asyncio.Semaphore(GTTS_CONCURRENCY),
              RECORDING: asyncio.Semaphore(n_jobs)}
    bar = tqdm(total=len(jobs), unit="prompt", desc="render",
               disable=None if progress is None else not progress)

    async def source_of(job: Job) -> tuple[bytes | str, str | None, str]:
        if job.engine == RECORDING:
            return str(job.recording), None, RECORDING
        if job.engine == GTTS:
            try:
                return await asyncio.to_thread(gtts.synthesize, job.text), "mp3", GTTS
            except Exception:
                if requested != AUTO:
                    raise
                # gTTS answered the probe but not now: this id gets espeak-ng; being recorded
                # as such, the next auto run with a working network renders it with gTTS again.
        return await espeak(job.text), "wav", ESPEAK

    async def one(job: Job) -> tuple[str, dict]:
        try:
            async with limits[job.engine]:
                source, fmt, engine = await source_of(job)
            made = await loop.run_in_executor(pool, audio.process, source, fmt, job.kind,
                                              str(out_dir), job.prompt_id)
            return engine, made
        finally:
            bar.update()

    try:
        return await asyncio.gather(*(one(job) for job in jobs), return_exceptions=True)
    finally:
        bar.close()


def render(catalog: Catalog | str | os.PathLike | None = None,
           out_dir: str | os.PathLike = DEFAULT_OUT, *, engine: str = AUTO,
           recordings_dir: str | os.PathLike | None = None, jobs: int | None = None,
           gtts_factory: GttsFactory | None = None, progress: bool | None = None) -> RenderResult:
    """Bring ``out_dir`` up to date with ``catalog`` (a Catalog, a catalog.toml path, or the
    shipped catalog). ``gtts_factory`` replaces the gTTS class (tests); ``progress`` None
    shows the bar only on a terminal."""
    started = time.perf_counter()
    catalog = _catalog(catalog)
    out_dir = Path(out_dir)
    if engine not in (AUTO, ESPEAK, GTTS):
        raise RenderError(f"unknown engine {engine!r}")
    n_jobs = jobs or len(os.sched_getaffinity(0))
    if n_jobs < 1:
        raise RenderError("--jobs must be at least 1")
    if not shutil.which("ffmpeg"):
        raise RenderError("ffmpeg is not installed (apt-get install ffmpeg)")

    recordings, ambiguous, unknown = find_recordings(
        Path(recordings_dir) if recordings_dir else None, catalog.texts)
    result = RenderResult(engine=None)
    result.warnings += [f"recording {p.name} names no catalog id" for p in unknown]
    result.failed.update({pid: "several recordings: " + ", ".join(p.name for p in paths)
                          for pid, paths in ambiguous.items()})

    needs_tts = any(pid not in recordings for pid in catalog.texts)
    gtts = Gtts(gtts_factory) if needs_tts and engine in (AUTO, GTTS) else None
    if needs_tts:
        result.engine = _resolve_engine(engine, gtts)
        if engine == AUTO and result.engine == ESPEAK:
            result.warnings.append("gTTS unreachable: espeak-ng renders this run")
        if result.engine == ESPEAK and not shutil.which("espeak-ng"):
            raise RenderError("espeak-ng is not installed (apt-get install espeak-ng)")

    manifest = load_manifest(out_dir)
    from .audio import processing_sha256  # here: the server imports this module, not pydub

    todo: list[Job] = []
    for pid, text in catalog.texts.items():
        if pid in ambiguous:
            continue
        kind, rec = _kind(catalog, pid), recordings.get(pid)
        job = Job(pid, kind, text, RECORDING if rec else result.engine,
                  sha256_file(rec) if rec else tts_source_sha256(text, result.engine),
                  processing_sha256(kind), rec, [])
        job.reasons = _stale_reasons(manifest["prompts"].get(pid), out_dir, job)
        if job.reasons:
            todo.append(job)
        else:
            result.unchanged.append(pid)

    if todo:
        sound_dir(out_dir).mkdir(parents=True, exist_ok=True)
        # forkserver, not fork: the gTTS probe thread may still be stuck in DNS, and forking
        # a process with threads can copy a held lock into the child.
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(n_jobs, mp_context=context) as pool:
            outcomes = asyncio.run(_execute(todo, out_dir, engine, gtts, n_jobs, pool, progress))
        for job, outcome in zip(todo, outcomes):
            if isinstance(outcome, BaseException):
                result.failed[job.prompt_id] = f"{type(outcome).__name__}: {outcome}"
                continue
            made_by, made = outcome
            source = (job.source_sha256 if made_by == job.engine
                      else tts_source_sha256(job.text, made_by))
            manifest["prompts"][job.prompt_id] = {
                "text": job.text, "text_sha256": sha256_bytes(job.text.encode()),
                "kind": job.kind, "engine": made_by, "source_sha256": source,
                "processing": job.processing, **made}
            result.rendered[job.prompt_id] = made_by
            result.reasons[job.prompt_id] = job.reasons

    for pid in [p for p in manifest["prompts"] if p not in catalog]:
        for ext in manifest["prompts"].pop(pid).get("files", {}):
            audio_path(out_dir, pid, ext).unlink(missing_ok=True)
        result.removed.append(pid)

    manifest["formats"] = {ext: f.declaration() for ext, f in FORMATS.items()}
    if todo or result.removed or not (out_dir / MANIFEST_NAME).exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        save_manifest(out_dir, manifest)
    result.seconds = time.perf_counter() - started
    return result


def check(catalog: Catalog | str | os.PathLike | None = None,
          out_dir: str | os.PathLike = DEFAULT_OUT,
          recordings_dir: str | os.PathLike | None = None) -> list[str]:
    """Problems that would make Asterisk play nothing, the wrong thing or a stale text; each
    line starts with the id (or the file) concerned. Empty: all is well."""
    catalog, out_dir = _catalog(catalog), Path(out_dir)
    manifest = load_manifest(out_dir)
    problems = []
    declared = {ext: f.declaration() for ext, f in FORMATS.items()}
    if manifest["prompts"] and manifest.get("formats") != declared:
        problems.append("manifest: its format declarations are not this version's; re-render")
    rec_dir = Path(recordings_dir) if recordings_dir else None
    recordings, ambiguous, _ = find_recordings(rec_dir, catalog.texts)
    for pid, text in catalog.texts.items():
        entry = manifest["prompts"].get(pid)
        if not entry:
            problems.append(f"{pid}: no audio (not rendered)")
            continue
        if entry.get("text_sha256") != sha256_bytes(text.encode()):
            problems.append(f"{pid}: stale, the text changed since it was rendered")
        for ext, fmt in FORMATS.items():
            sha = entry.get("files", {}).get(ext)
            why = ("not in the manifest" if sha is None else
                   file_problem(audio_path(out_dir, pid, ext), fmt, entry.get("duration_ms", 0),
                                sha))
            if why:
                problems.append(f"{pid}: .{ext} {why}")
        rec = recordings.get(pid)
        if pid in ambiguous:
            problems.append(f"{pid}: several recordings, none can be used")
        elif rec and (entry.get("engine") != RECORDING
                      or entry.get("source_sha256") != sha256_file(rec)):
            problems.append(f"{pid}: recording {rec.name} is not rendered yet")
        elif rec is None and rec_dir and rec_dir.is_dir() and entry.get("engine") == RECORDING:
            problems.append(f"{pid}: rendered from a recording no longer in {rec_dir}")
    # Asterisk would happily play a stray <id>.wav dropped beside the rendered files.
    expected = {f"{pid}.{ext}" for pid in catalog.texts for ext in FORMATS}
    if sound_dir(out_dir).is_dir():
        for path in sorted(sound_dir(out_dir).iterdir()):
            if path.name not in expected and not path.name.startswith("."):
                problems.append(f"{path.name}: unexpected file, Asterisk may play it "
                                "(recordings belong in the recordings directory)")
    return problems


def list_prompts(catalog: Catalog | str | os.PathLike | None = None,
                 out_dir: str | os.PathLike = DEFAULT_OUT,
                 ) -> list[tuple[str, int | None, str, str]]:
    """(id, duration in ms or None, engine or "-", text) for every catalog id."""
    catalog, entries = _catalog(catalog), load_manifest(out_dir)["prompts"]
    return [(pid, entries.get(pid, {}).get("duration_ms"), entries.get(pid, {}).get("engine", "-"),
             text) for pid, text in catalog.texts.items()]


def _default_out() -> str:
    """The directory the server reads (ivr.config's sounds_dir): IVR_SOUNDS_DIR, else
    $IVR_VAR_DIR/sounds, else var/sounds."""
    if os.environ.get("IVR_SOUNDS_DIR"):
        return os.environ["IVR_SOUNDS_DIR"]
    return str(Path(os.environ.get("IVR_VAR_DIR", "var")) / "sounds")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivr prompts",
                                     description="Render, check and list the prompt audio.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", default=_default_out(),
                        help="sounds directory (IVR_SOUNDS_DIR; default %(default)s)")
    common.add_argument("--catalog", help="a catalog.toml other than the shipped one")
    recordings = argparse.ArgumentParser(add_help=False)
    recordings.add_argument("--recordings",
                            default=os.environ.get("IVR_RECORDINGS_DIR") or DEFAULT_RECORDINGS,
                            help="studio recordings <id>.<ext> (IVR_RECORDINGS_DIR; "
                                 "default %(default)s)")
    r = sub.add_parser("render", parents=[common, recordings],
                       help="render what changed since the last run")
    r.add_argument("--engine", choices=(AUTO, GTTS, ESPEAK),
                   default=os.environ.get("IVR_TTS_ENGINE") or AUTO,
                   help="TTS engine (IVR_TTS_ENGINE; default %(default)s: gTTS when "
                        "reachable, else espeak-ng)")
    r.add_argument("--jobs", type=int, default=None, help="parallel jobs (default: all cores)")
    r.add_argument("-v", "--verbose", action="store_true", help="say why each id was rendered")
    sub.add_parser("check", parents=[common, recordings],
                   help="exit 1, naming the ids, when any audio is missing, stale or damaged")
    sub.add_parser("list", parents=[common], help="id, duration, engine and text of each prompt")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "render":
        try:
            result = render(args.catalog, args.out, engine=args.engine,
                            recordings_dir=args.recordings, jobs=args.jobs)
        except RenderError as exc:
            print(f"ivr prompts render: {exc}", file=sys.stderr)
            return 2
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if args.verbose:
            for pid, reasons in result.reasons.items():
                print(f"  {pid} ({result.rendered[pid]}): {'; '.join(reasons)}")
        for pid, error in result.failed.items():
            print(f"failed: {pid}: {error}", file=sys.stderr)
        print(f"{result.summary()} → {args.out}")
        return 1 if result.failed else 0
    if args.command == "check":
        problems = check(args.catalog, args.out, args.recordings)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            names = sorted({p.split(":", 1)[0] for p in problems})
            print(f"check failed: {', '.join(names)}", file=sys.stderr)
            return 1
        print(f"ok: {len(_catalog(args.catalog).texts)} prompts in {args.out}")
        return 0
    total = 0
    for pid, ms, engine, text in list_prompts(args.catalog, args.out):
        total += ms or 0
        print(f"{pid:<26} {'-' if ms is None else f'{ms / 1000:.2f} s':>8}  {engine:<9} {text}")
    print(f"total {total / 1000:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
