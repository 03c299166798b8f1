"""A real Asterisk 22 for tests and listening, carrying this project's dialplan.

Debian bookworm has no Asterisk package; Debian unstable ("sid") has Asterisk 22. The
sandbox builds a sid root with ``debootstrap`` once (about a minute, ~500 MB, cached and
reused), installs the ``*.conf`` files beside this module into it with their ``@IVR_...@``
values filled in, copies the project's rendered prompts into its sounds, and runs
Asterisk in it with ``chroot`` (which shares the host's network: Asterisk reaches a
FastAGI server on 127.0.0.1 and sipp on the host reaches Asterisk on 127.0.0.1).
Needs root. The container image (dialplan/docker/Dockerfile) runs the same steps: the
same packages, this module's ``install``, the same asterisk command line.

Command line (stdlib only; ``ivr asterisk ...`` is the same with the IVR's settings)::

    python3 dialplan/sandbox.py [--sounds DIR] [--agi HOST:PORT] up   # idempotent
    python3 dialplan/sandbox.py status              # prints "up" or "down"
    python3 dialplan/sandbox.py cli "core show channels"
    python3 dialplan/sandbox.py originate --keys 1W0001234567890# [--exten 165] ...
    python3 dialplan/sandbox.py down
    python3 dialplan/sandbox.py --root / install [asterisk ...]   # the container's start:
                                    # config and sounds only, then exec the command

Several instances can run in one root (``--name``): each has its own config, state, logs
and ports and shares the packages and the sounds (the tests run "test" beside a
developer's default instance).

Library::

    from dialplan.sandbox import Sandbox
    sandbox = Sandbox()                      # settings from IVR_* variables, see __init__
    sandbox.up()
    report = await sandbox.originate_local_async(keys="1W0001234567890#")
    report.route["Outcome"], report.hangup["AgiStatus"]

Test calls use AMI through panoramisk (the project's AMI client), imported only then.

Environment: ``IVR_ASTERISK_ROOT`` (default /var/cache/bpjs-ivr/asterisk-root),
``IVR_AGI_ADDRESS`` (127.0.0.1:4573), ``IVR_SOUNDS_DIR`` (prompts: <dir>/id/bpjs/<id>.sln),
``IVR_SIP_ADDRESS`` (127.0.0.1:5060), ``IVR_SIP_CALLERS`` (who is the test caller:
127.0.0.1), ``IVR_RTP_PORTS`` (10000-20000), ``IVR_AMI_PORT`` (5038), ``IVR_AMI_BIND``
(127.0.0.1), ``IVR_DESK_AMI_PERMIT`` (127.0.0.1/255.255.255.255), ``IVR_DEBIAN_MIRROR``
(debootstrap's default when unset). Secrets, none with a default: ``IVR_SANDBOX_AMI_SECRET``
(AMI user "sandbox": test calls), ``IVR_AMI_SECRET`` (AMI user "desk": the agent desk),
``IVR_AGENT_PASSWORD`` (the demo agents agent1/agent2, desk and SIP alike); each one not
given is generated once and kept in ``Sandbox.secrets_file`` (mode 0600, the instance's state folder).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

SOURCE_DIR = Path(__file__).resolve().parent
DEFAULT_ROOT = "/var/cache/bpjs-ivr/asterisk-root"
SUITE = "sid"
PACKAGES = ("asterisk", "asterisk-core-sounds-en-gsm", "asterisk-moh-opsound-gsm")
# Written last into a finished root; a root without it is never used, a partial one is
# rebuilt.
COMPLETE_MARKER = ".bpjs-ivr-root.json"
# Written first into a root being built, so only our own half-built trees are deleted.
BUILDING_MARKER = ".bpjs-ivr-building"

# Paths inside the root (as Asterisk sees them). Packages, stock sounds and the prompts are
# shared by every instance in a root; each instance has its own Layout (config, state,
# logs, control socket) and its own ports.
DATA_DIR = "/usr/share/asterisk"
SOUNDS_DIR = DATA_DIR + "/sounds"
INSTANCE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")
# Configuration whose change needs a restart, not a reload.
RESTART_CONFIGS = {"asterisk.conf", "modules.conf"}
# The caller's prompt tree keeps only these (Asterisk sound formats).
SOUND_SUFFIXES = {".sln", ".sln16", ".sln24", ".sln32", ".sln48", ".wav", ".gsm",
                  ".ulaw", ".alaw", ".g722"}

TOKEN = re.compile(r"@(IVR_[A-Z_]+)@")


@dataclass(frozen=True)
class Layout:
    """Where one Asterisk instance keeps its own things, inside the root."""
    config: str
    db: str
    spool: str
    log: str
    run: str
    cache: str

    @classmethod
    def named(cls, name: str = "") -> "Layout":
        """The default instance ("") uses /etc/bpjs-ivr etc.; "test" uses /etc/bpjs-ivr-test."""
        if name and not INSTANCE_NAME.fullmatch(name):
            raise SandboxError(f"instance name {name!r}: use lower-case letters, digits and -")
        s = f"-{name}" if name else ""
        return cls(config=f"/etc/bpjs-ivr{s}", db=f"/var/lib/bpjs-ivr{s}",
                   spool=f"/var/spool/bpjs-ivr{s}", log=f"/var/log/bpjs-ivr{s}",
                   run=f"/run/bpjs-ivr{s}", cache=f"/var/cache/bpjs-ivr{s}")


def asterisk_command(layout: Layout, *args: str) -> list[str]:
    """The asterisk command line of an instance (inside the root, or in the container)."""
    return ["asterisk", "-C", layout.config + "/asterisk.conf", *args]


# Asterisk in the foreground (its process is the service; pid file in the run dir), with no
# colours in its console output. The container runs the same.
FOREGROUND = ("-f", "-n")


class SandboxError(RuntimeError):
    """The sandbox could not do what was asked; the message says why and where to look."""


@dataclass
class CallReport:
    """The dialplan's report events (extensions.conf, [hotline-report]) of one test call:
    AMI UserEvent fields, e.g. ``{"Outcome": "completed", "AgiStatus": "SUCCESS", ...}``."""
    tag: str
    route: dict[str, str] | None = None      # IvrRoute: after AGI() returned
    hangup: dict[str, str] | None = None     # IvrHangup: the hotline channel hung up
    agents: list[dict[str, str]] = field(default_factory=list)  # IvrAgent: per agent leg
    caller_channel: str = ""                 # the caller half, e.g. Local/...;1

    @property
    def final(self) -> dict[str, str]:
        """The variables as they were at hang-up (the hangup handler always runs)."""
        return self.hangup or {}


class Sandbox:
    def __init__(self, root: str | os.PathLike | None = None, *,
                 name: str = "",
                 sounds_dir: str | os.PathLike | None = None,
                 agi_address: str | None = None,
                 sip_address: str | None = None,
                 ami_port: int | None = None,
                 ami_secret: str | None = None,
                 desk_ami_secret: str | None = None,
                 agent_password: str | None = None,
                 sip_callers: str | None = None,
                 rtp_ports: str | None = None,
                 verbose: int | None = None,
                 carrier_address: str | None = None,
                 mirror: str | None = None,
                 env: dict[str, str] | None = None):
        """Arguments left out are read from ``env`` (default ``os.environ``). ``name``
        picks an instance: several can run in one root, each with its own config, state,
        logs and ports (the tests run "test" beside a developer's default one)."""
        env = os.environ if env is None else env
        self.root = Path(root or env.get("IVR_ASTERISK_ROOT") or DEFAULT_ROOT).absolute()
        self.name = name
        self.layout = Layout.named(name)
        sounds = sounds_dir or env.get("IVR_SOUNDS_DIR")
        self.sounds_dir = Path(sounds).absolute() if sounds else None
        self.agi_address = agi_address or env.get("IVR_AGI_ADDRESS") or "127.0.0.1:4573"
        self.sip_address = sip_address or env.get("IVR_SIP_ADDRESS") or "127.0.0.1:5060"
        self.ami_port = int(ami_port or env.get("IVR_AMI_PORT") or 5038)
        # Where AMI listens and whence the desk may log in (the container opens both to
        # the compose network; the sandbox keeps them on loopback).
        self.ami_bind = env.get("IVR_AMI_BIND") or "127.0.0.1"
        # 3 logs every file played (a read-back's digits among them): tests only.
        self.verbose = int(verbose if verbose is not None else
                           env.get("IVR_ASTERISK_VERBOSE") or 2)
        self.desk_ami_permit = env.get("IVR_DESK_AMI_PERMIT") or "127.0.0.1/255.255.255.255"
        # Secrets: given, or from the environment, else generated once per instance and
        # kept in its state file (secrets_file); there is no default secret.
        self._given_secrets = {
            "ami_secret": ami_secret or env.get("IVR_SANDBOX_AMI_SECRET") or "",
            "desk_ami_secret": desk_ami_secret or env.get("IVR_AMI_SECRET") or "",
            "agent_password": agent_password or env.get("IVR_AGENT_PASSWORD") or "",
        }
        self._secrets: dict[str, str] | None = None
        # Who may call in as the test caller (pjsip.conf identify "match"): loopback for
        # the sandbox, any address in a container (Docker's NAT hides the caller's).
        self.sip_callers = sip_callers or env.get("IVR_SIP_CALLERS") or "127.0.0.1"
        self.rtp_ports = rtp_ports or env.get("IVR_RTP_PORTS") or "10000-20000"
        # Waiting for an agent: the announcement interval, and the outbound trunk callbacks
        # are dialled through, towards a simulated carrier on this machine (host:port).
        self.wait_announce = env.get("IVR_WAIT_ANNOUNCE_SECONDS") or "30"
        self.callback_trunk = env.get("IVR_CALLBACK_TRUNK") or "carrier"
        self.callback_ring = env.get("IVR_CALLBACK_RING_SECONDS") or "30"
        self.carrier_address = (carrier_address or env.get("IVR_CARRIER_ADDRESS")
                                or "127.0.0.1:5070")
        self.mirror = mirror or env.get("IVR_DEBIAN_MIRROR") or None
        self._process: subprocess.Popen | None = None

    # --- Secrets

    @property
    def secrets_file(self) -> Path:
        """This instance's generated secrets (JSON, mode 0600), in its state folder (read
        only once the root exists: a root being built must stay empty)."""
        return self.host_path(self.layout.db + "/secrets.json")

    def _secret(self, key: str) -> str:
        if self._given_secrets[key]:
            return self._given_secrets[key]
        if self._secrets is None:
            try:
                self._secrets = json.loads(self.secrets_file.read_text())
            except (FileNotFoundError, ValueError):
                self._secrets = {}
        if not self._secrets.get(key):
            self._secrets[key] = secrets.token_urlsafe(18)
            self.secrets_file.parent.mkdir(parents=True, exist_ok=True)
            partial = self.secrets_file.with_suffix(".tmp")
            partial.unlink(missing_ok=True)
            # created 0600: never readable by others, not even for a moment
            with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                           "w") as out:
                out.write(json.dumps(self._secrets, indent=1))
            partial.replace(self.secrets_file)
        return self._secrets[key]

    @property
    def ami_secret(self) -> str:
        """The "sandbox" AMI user's (test calls): IVR_SANDBOX_AMI_SECRET, else generated."""
        return self._secret("ami_secret")

    @property
    def desk_ami_secret(self) -> str:
        """The agent desk's AMI user ("desk"): IVR_AMI_SECRET, else generated."""
        return self._secret("desk_ami_secret")

    @property
    def agent_password(self) -> str:
        """The demo agents' password, for the desk and the SIP softphones alike:
        IVR_AGENT_PASSWORD, else generated once and kept in secrets_file."""
        return self._secret("agent_password")

    @property
    def agent_password_given(self) -> bool:
        """Set by the operator (IVR_AGENT_PASSWORD), not generated: never printed."""
        return bool(self._given_secrets["agent_password"])

    # --- Host paths of things inside the root

    def host_path(self, inside: str) -> Path:
        """The host path of a path inside the root."""
        return self.root / inside.lstrip("/")

    @property
    def log_dir(self) -> Path:
        return self.host_path(self.layout.log)

    @property
    def full_log(self) -> Path:
        """Dialplan report lines ("HOTLINE IvrRoute ...") and the applications run."""
        return self.log_dir / "full"

    @property
    def console_log(self) -> Path:
        """Asterisk's standard output and error (start-up failures land here)."""
        return self.log_dir / "console.log"

    @property
    def recordings_dir(self) -> Path:
        """Where HOTLINE_RECORD=<name> calls are recorded, as <name>.wav."""
        return self.host_path(self.layout.spool + "/monitor")

    @property
    def build_log(self) -> Path:
        return self.root.with_name(self.root.name + ".debootstrap.log")

    # --- The root

    def ensure_root(self) -> None:
        """Build the Debian sid root with Asterisk unless a complete one is there."""
        with self._lock():
            self._ensure_root_locked()

    def _ensure_root_locked(self) -> None:
        marker = self.root / COMPLETE_MARKER
        if marker.exists():
            missing = set(PACKAGES) - set(json.loads(marker.read_text())["packages"])
            if missing:
                self._add_packages(sorted(missing))
            return
        if self.root.exists():
            raise SandboxError(
                f"{self.root} exists but is not a finished sandbox root (no {COMPLETE_MARKER});"
                " remove it or set IVR_ASTERISK_ROOT elsewhere")
        self._ensure_debootstrap()
        partial = self.root.with_name(self.root.name + ".partial")
        if partial.exists():
            self._remove_partial(partial)
        partial.mkdir(parents=True)
        (partial / BUILDING_MARKER).touch()
        command = ["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                   SUITE, str(partial)]
        if self.mirror:
            command.append(self.mirror)
        print(f"sandbox: building the Asterisk root in {self.root} (about a minute);"
              f" log: {self.build_log}", file=sys.stderr)
        with open(self.build_log, "wb") as log:
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise SandboxError(f"debootstrap failed ({result.returncode}); see {self.build_log}")
        (partial / BUILDING_MARKER).unlink()
        (partial / COMPLETE_MARKER).write_text(json.dumps(
            {"suite": SUITE, "packages": list(PACKAGES), "built": time.time()}) + "\n")
        partial.rename(self.root)

    def _add_packages(self, packages: list[str]) -> None:
        """Bring an older cached root up to PACKAGES."""
        with open(self.build_log, "ab") as log:
            for command in (["apt-get", "update"],
                            ["apt-get", "install", "-y", "--no-install-recommends", *packages]):
                result = subprocess.run(["chroot", str(self.root), *command], stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=self._chroot_env())
                if result.returncode != 0:
                    raise SandboxError(f"adding {packages} failed; see {self.build_log}")
        marker = self.root / COMPLETE_MARKER
        info = json.loads(marker.read_text())
        info["packages"] = sorted(set(info["packages"]) | set(packages))
        marker.write_text(json.dumps(info) + "\n")

    @staticmethod
    def _ensure_debootstrap() -> None:
        if shutil.which("debootstrap"):
            return
        install = ["apt-get", "install", "-y", "debootstrap"]
        if subprocess.run(install, stdin=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update"], stdin=subprocess.DEVNULL, check=True)
            subprocess.run(install, stdin=subprocess.DEVNULL, check=True)

    @staticmethod
    def _remove_partial(partial: Path) -> None:
        """Delete an interrupted build: unmount what debootstrap left mounted (/proc, /sys)
        first, and delete only a tree this module started."""
        if any(partial.iterdir()) and not (partial / BUILDING_MARKER).exists():
            raise SandboxError(f"{partial} is not a root this sandbox was building; remove it")
        prefix = str(partial.resolve()) + "/"
        with open("/proc/self/mountinfo") as mounts:
            points = [line.split()[4] for line in mounts]
        for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(partial)], check=True)

    @contextlib.contextmanager
    def _lock(self):
        """One sandbox operation at a time per root (parallel test workers)."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with open(self.root.with_name(self.root.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # --- Configuration and sounds

    def values(self) -> dict[str, str]:
        """The @IVR_...@ values substituted into the .conf files."""
        modules = sorted(self.root.glob("usr/lib/*/asterisk/modules"))
        if not modules:
            raise SandboxError(f"no Asterisk modules directory in {self.root}")
        rtp_start, _, rtp_end = self.rtp_ports.partition("-")
        if not (rtp_start.isdigit() and rtp_end.isdigit() and int(rtp_start) < int(rtp_end)):
            raise SandboxError(f"RTP ports {self.rtp_ports!r}: expected FIRST-LAST")
        return {
            "IVR_CONFIG_DIR": self.layout.config,
            "IVR_MODULES_DIR": "/" + str(modules[0].relative_to(self.root)),
            "IVR_DATA_DIR": DATA_DIR,
            "IVR_DB_DIR": self.layout.db,
            "IVR_SPOOL_DIR": self.layout.spool,
            "IVR_LOG_DIR": self.layout.log,
            "IVR_RUN_DIR": self.layout.run,
            "IVR_CACHE_DIR": self.layout.cache,
            "IVR_AGI_ADDRESS": self.agi_address,
            "IVR_SIP_ADDRESS": self.sip_address,
            "IVR_SIP_CALLERS": self.sip_callers,
            "IVR_RTP_START": rtp_start,
            "IVR_RTP_END": rtp_end,
            "IVR_AMI_PORT": str(self.ami_port),
            "IVR_AMI_BIND": self.ami_bind,
            "IVR_ASTERISK_VERBOSE": str(self.verbose),
            "IVR_DESK_AMI_PERMIT": self.desk_ami_permit,
            "IVR_AMI_SECRET": self.ami_secret,
            "IVR_DESK_AMI_SECRET": self.desk_ami_secret,
            "IVR_AGENT_PASSWORD": self.agent_password,
            "IVR_WAIT_ANNOUNCE": self.wait_announce,
            "IVR_CALLBACK_TRUNK": self.callback_trunk,
            "IVR_CALLBACK_RING": self.callback_ring,
            "IVR_CARRIER_ADDRESS": self.carrier_address,
        }

    def render(self, text: str, values: dict[str, str], name: str = "") -> str:
        def substitute(match: re.Match) -> str:
            if match.group(1) not in values:
                raise SandboxError(f"{name}: unknown template value @{match.group(1)}@")
            return values[match.group(1)]
        return TOKEN.sub(substitute, text)

    def install_config(self) -> set[str]:
        """Render dialplan/*.conf into the root's config dir; return the names that changed
        (added, modified or removed)."""
        values = self.values()
        target = self.host_path(self.layout.config)
        target.mkdir(parents=True, exist_ok=True)
        layout = self.layout
        for inside in (layout.db, layout.spool + "/monitor", layout.spool + "/tmp", layout.log,
                       layout.run, layout.cache):
            self.host_path(inside).mkdir(parents=True, exist_ok=True)
        changed = set()
        wanted = {}
        for source in sorted(SOURCE_DIR.glob("*.conf")):
            wanted[source.name] = self.render(source.read_text(), values, source.name)
        for name, text in wanted.items():
            path = target / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                changed.add(name)
        for stale in target.glob("*.conf"):
            if stale.name not in wanted:
                stale.unlink()
                changed.add(stale.name)
        return changed

    def install_sounds(self) -> int:
        """Mirror the caller's prompt tree (<sounds_dir>/<language>/...) into the root's
        sounds, beside the stock ones; files installed earlier and gone from the source
        are removed. Without a sounds_dir, what is installed stays. Returns the number of
        files copied."""
        if self.sounds_dir is None:
            return 0
        if not self.sounds_dir.is_dir():
            raise SandboxError(f"sounds directory {self.sounds_dir} does not exist")
        record = self.host_path(self.layout.db + "/installed-sounds.txt")
        before = set(record.read_text().split("\n")) - {""} if record.exists() else set()
        now: set[str] = set()
        copied = 0
        for source in sorted(self.sounds_dir.rglob("*")):
            relative = source.relative_to(self.sounds_dir)
            if (len(relative.parts) < 2 or not source.is_file()
                    or source.suffix not in SOUND_SUFFIXES):
                continue
            now.add(str(relative))
            target = self._inside(SOUNDS_DIR + "/" + str(relative))
            stat = source.stat()
            if target.exists() and (target.stat().st_size, int(target.stat().st_mtime)) \
                    == (stat.st_size, int(stat.st_mtime)):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            copied += 1
        for gone in before - now:
            with contextlib.suppress(FileNotFoundError):
                self._inside(SOUNDS_DIR + "/" + gone).unlink()
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text("".join(line + "\n" for line in sorted(now)))
        return copied

    def _inside(self, inside: str) -> Path:
        """Host path of a path inside the root, following symbolic links the way the
        chroot would (sounds/en is a link to /etc/alternatives/...), never out of it."""
        path = self.root
        parts = list(Path(inside.lstrip("/")).parts)
        hops = 0
        while parts:
            part = parts.pop(0)
            candidate = path / part
            if candidate.is_symlink():
                hops += 1
                if hops > 40:
                    raise SandboxError(f"too many symbolic links in {inside}")
                link = os.readlink(candidate)
                if link.startswith("/"):
                    path = self.root
                parts = list(Path(link.lstrip("/")).parts) + parts
            elif part == "..":
                path = path.parent if path != self.root else path
            else:
                path = candidate
        return path

    # --- The process

    def _chroot_env(self) -> dict[str, str]:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
                "DEBIAN_FRONTEND": "noninteractive"}

    def _asterisk(self, *args: str) -> list[str]:
        return ["chroot", str(self.root), *asterisk_command(self.layout, *args)]

    def pid(self) -> int | None:
        """The running Asterisk's pid (from its own pid file), or None."""
        try:
            pid = int(self.host_path(self.layout.run + "/asterisk.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)
            alive = fields[1].split()[0] not in ("Z", "X") and "(asterisk" in fields[0]
            if alive and os.path.realpath(f"/proc/{pid}/root") == str(self.root.resolve()):
                return pid
        except (FileNotFoundError, PermissionError, IndexError):
            pass
        return None

    def status(self) -> str:
        """Return "up" when Asterisk runs in this root and answers its control socket."""
        if self.pid() is None:
            return "down"
        try:
            self.cli("core show uptime seconds", timeout=5)
        except SandboxError:
            return "down"
        return "up"

    def up(self, timeout: float = 60.0) -> None:
        """Start Asterisk (building the root first if needed) and wait until it is fully
        booted. When it already runs: refresh config and sounds, reload what changed
        (restart when asterisk.conf or modules.conf changed), else do nothing."""
        with self._lock():
            self._ensure_root_locked()
            changed = self.install_config()
            self.install_sounds()
            if self.pid() is not None:
                if changed & RESTART_CONFIGS:
                    self._stop()
                elif changed:
                    self.cli("core reload")
                    return
                else:
                    self._wait_booted(time.monotonic() + timeout)
                    return
            self._start(timeout)

    def restart(self, timeout: float = 60.0) -> None:
        self.down()
        self.up(timeout)

    def _check_ports_free(self) -> None:
        """Refuse to start beside another Asterisk (another root, or a system one): it
        would start without AMI and SIP, and tests would talk to the other one."""
        host, _, port = self.sip_address.rpartition(":")
        for kind, address in ((socket.SOCK_STREAM, ("127.0.0.1", self.ami_port)),
                              (socket.SOCK_DGRAM, (host, int(port)))):
            with socket.socket(socket.AF_INET, kind) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(address)
                except OSError as error:
                    raise SandboxError(f"{address[0]}:{address[1]} is in use ({error.strerror});"
                                       " is another Asterisk running?") from None

    def _start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._check_ports_free()
        self.host_path(self.layout.run + "/asterisk.ctl").unlink(missing_ok=True)
        with open(self.console_log, "ab") as console:
            console.write(f"--- sandbox start {time.strftime('%F %T')}\n".encode())
            console.flush()
            # -f: stay in the foreground (this process is Asterisk; pid file in its run dir);
            # its own session, so it outlives the command that started it.
            self._process = subprocess.Popen(
                self._asterisk(*FOREGROUND), stdin=subprocess.DEVNULL, stdout=console,
                stderr=subprocess.STDOUT, start_new_session=True, env=self._chroot_env())
        self._wait_booted(deadline)

    def _wait_booted(self, deadline: float) -> None:
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise SandboxError(f"Asterisk exited ({self._process.returncode}) while starting;"
                                   f" see {self.console_log}:\n{self._tail(self.console_log)}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxError(f"Asterisk did not boot in time; see {self.console_log}")
            if self.host_path(self.layout.run + "/asterisk.ctl").exists():
                with contextlib.suppress(SandboxError):
                    self.cli("core waitfullybooted", timeout=remaining)
                    return
            time.sleep(0.05)

    def down(self, timeout: float = 20.0) -> None:
        """Stop Asterisk: "core stop now", then SIGTERM, then SIGKILL. No-op when down."""
        with self._lock():
            self._stop(timeout)

    def _stop(self, timeout: float = 20.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(SandboxError):
            self.cli("core stop now", timeout=timeout / 2)
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            end = time.monotonic() + timeout / 2
            while time.monotonic() < end:
                if self._process is not None:
                    self._process.poll()
                if self.pid() is None:
                    self._process = None
                    return
                time.sleep(0.05)
        raise SandboxError(f"Asterisk (pid {pid}) would not stop")

    def cli(self, command: str, timeout: float = 30.0) -> str:
        """Run one CLI command in the running Asterisk (asterisk -rx) and return its output."""
        try:
            result = subprocess.run(self._asterisk("-rx", command), capture_output=True,
                                    text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                                    env=self._chroot_env())
        except subprocess.TimeoutExpired:
            raise SandboxError(f"CLI command {command!r} timed out") from None
        output = result.stdout + result.stderr
        if result.returncode != 0 or output.startswith("Unable to connect"):
            raise SandboxError(f"CLI command {command!r} failed: {output.strip()}")
        return result.stdout

    def log_reports(self, tag: str | None = None) -> list[dict[str, str]]:
        """The dialplan's "HOTLINE <event> key=value ..." lines from the full log, oldest
        first, as dicts with an "event" key; only those of one test call when tag is given.
        For calls placed without AMI (e.g. "channel originate" from the CLI)."""
        reports = []
        with contextlib.suppress(FileNotFoundError), open(self.full_log, errors="replace") as log:
            for line in log:
                _, found, report = line.rstrip("\n").partition("app_verbose.c: HOTLINE ")
                if not found:
                    continue
                event, *pairs = report.split(" ")
                fields = dict(pair.partition("=")[::2] for pair in pairs)
                if tag is None or fields.get("tag") == tag:
                    reports.append({"event": event, **fields})
        return reports

    @staticmethod
    def _tail(path: Path, lines: int = 20) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # --- Test calls over AMI (panoramisk)

    @contextlib.asynccontextmanager
    async def ami(self, events: str = "call,user", timeout: float = 5.0):
        """A logged-in AMI connection as the "sandbox" user (manager.conf) receiving
        ``events`` (classes), for the event loop that is running: a panoramisk Manager
        that fails instead of reconnecting."""
        manager = _one_shot_manager()(loop=asyncio.get_running_loop(), host="127.0.0.1",
                                      port=self.ami_port, username="sandbox",
                                      secret=self.ami_secret, events=events)
        try:
            manager.connect()
            try:
                async with asyncio.timeout(timeout):
                    await manager.ready
            except TimeoutError:
                raise SandboxError(f"no AMI login on 127.0.0.1:{self.ami_port} within "
                                   f"{timeout} s") from None
            yield manager
        finally:
            manager.close()

    async def originate_local_async(
            self, exten: str = "1500400", context: str = "hotline",
            caller_context: str = "caller", *, keys: str = "", wait: float = 2,
            gap_ms: int = 250, hold: float = 30, record: str | None = None,
            caller_id: str = "", variables: dict[str, str] | None = None,
            live_keys: asyncio.Queue | None = None,
            on_agi_command: Callable[[str], None] | None = None,
            timeout: float = 120) -> CallReport:
        """Place a call Local/<exten>@<context> whose other half runs <caller_context>: it
        waits ``wait`` s, sends ``keys`` one by one, ``gap_ms`` apart (w/W pause 0.5/1 s),
        stays ``hold`` s and hangs up. Keys put into ``live_keys`` while the call runs are
        pressed at once (AMI PlayDTMF on the caller half; None hangs up), and
        ``on_agi_command`` sees each FastAGI command the call runs. Returns when the
        hotline channel has hung up (its IvrHangup event) with the dialplan's report
        events. ``record`` names a recording (recordings_dir/<record>.wav); ``variables``
        are set on the call (``IVR_AGI=host:port`` sends it to another FastAGI server than
        the configured one: a channel variable shadows the dialplan's global). Run it from
        the event loop that serves the AGI."""
        tag = uuid.uuid4().hex
        report = CallReport(tag)
        call_vars = {"HOTLINE_TAG": tag, "CALLER_KEYS": keys, "CALLER_WAIT": str(wait),
                     "CALLER_GAP": str(gap_ms), "CALLER_HOLD": str(hold)}
        if record:
            call_vars["HOTLINE_RECORD"] = record
        call_vars.update(variables or {})
        hung_up = asyncio.get_running_loop().create_future()
        # The hotline half is <caller half>;2, known once the call is placed; AGI commands
        # seen before that wait here.
        agi_seen: list[tuple[str, str]] = []

        def on_agi_event(manager, event) -> None:
            agi_seen.append((event.get("Channel", ""), event.get("Command", "")))
            pass_agi_commands()

        def pass_agi_commands() -> None:
            if report.caller_channel:
                hotline_half = report.caller_channel[:-1] + "2"
                for channel, command in agi_seen:
                    if channel == hotline_half:
                        on_agi_command(command)
                agi_seen.clear()

        def on_user_event(manager, event) -> None:
            if event.get("Tag") != tag:
                return
            fields = event_fields(event)
            name = fields.get("UserEvent")
            if name == "IvrRoute":
                report.route = fields
            elif name == "IvrAgent":
                report.agents.append(fields)
            elif name == "IvrHangup":
                report.hangup = fields
                if not hung_up.done():
                    hung_up.set_result(None)

        originate = {"Action": "Originate", "Channel": f"Local/{exten}@{context}",
                     "Context": caller_context, "Exten": "s", "Priority": "1",
                     "Async": "true", "Timeout": "30000",
                     "Variable": [f"{k}={v}" for k, v in call_vars.items()]}
        if caller_id:
            originate["CallerID"] = caller_id
        events = "call,user,agi" if on_agi_command else "call,user"
        async with self.ami(events) as manager:
            manager.register_event("UserEvent", on_user_event)
            if on_agi_command:
                manager.register_event("AGIExecStart", on_agi_event)
            presser = None
            try:
                async with asyncio.timeout(timeout):
                    replies = await manager.send_action(originate)
                    replies = replies if isinstance(replies, list) else [replies]
                    placed = next((r for r in replies
                                   if r.get("Event") == "OriginateResponse"), None)
                    if placed is None or placed.get("Response") != "Success":
                        raise SandboxError("the call was not placed: "
                                           f"{[event_fields(r) for r in replies]}")
                    report.caller_channel = placed.get("Channel", "")
                    if on_agi_command:
                        pass_agi_commands()
                    if live_keys is not None:
                        presser = asyncio.create_task(
                            _press_keys(manager, report.caller_channel, live_keys))
                    lost = asyncio.ensure_future(manager.lost.wait())
                    try:
                        await asyncio.wait({hung_up, lost},
                                           return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        lost.cancel()
                    if not hung_up.done():
                        raise SandboxError(f"AMI connection lost during call {tag}")
                    return report
            except TimeoutError:
                raise SandboxError(f"call {tag} did not end within {timeout} s") from None
            finally:
                if presser is not None:
                    presser.cancel()
                if report.caller_channel and not hung_up.done() and not manager.lost.is_set():
                    # The call outlived whoever placed it (time limit, Ctrl-C): end it.
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(2):
                            await manager.send_action({"Action": "Hangup",
                                                       "Channel": report.caller_channel})

    def originate_local(self, *args, **kwargs) -> CallReport:
        """Blocking originate_local_async, for use outside an event loop."""
        return asyncio.run(self.originate_local_async(*args, **kwargs))


def event_fields(message) -> dict[str, str]:
    """A panoramisk Message as a plain dict. A field whose value is empty comes back
    missing when it ends the message (panoramisk strips the message, then drops a
    "Key:" line without ": "), so the report's fields default to ""."""
    fields = {key: value for key, value in message.items() if key != "content"}
    for key in REPORT_FIELDS:
        fields.setdefault(key, "")
    return fields


# The fields of the dialplan's report events ([hotline-report] in extensions.conf).
REPORT_FIELDS = ("Dialed", "Tag", "AgiStatus", "Outcome", "TransferReason", "Verified",
                 "MemberStatus", "CallId", "Route", "QueueStatus", "HangupCause")


async def _press_keys(manager, channel: str, keys: asyncio.Queue) -> None:
    """Press each key taken from ``keys`` on ``channel`` (AMI PlayDTMF)."""
    while True:
        key = await keys.get()
        if key is None:
            await manager.send_action({"Action": "Hangup", "Channel": channel})
            return
        # "Async: false": panoramisk 1.4 reads the "DTMF successfully queued" reply as the
        # start of an asynchronous action's list and fails (KeyError 'async') without it.
        reply = await manager.send_action({"Action": "PlayDTMF", "Channel": channel,
                                           "Digit": key, "Duration": "100",
                                           "Async": "false"})
        if reply.get("Response") != "Success":
            return  # the caller's channel is gone


@functools.cache
def _one_shot_manager():
    """panoramisk's Manager for one test call or command (imported here: the rest of this
    module is stdlib only, for the container's install step)."""
    try:
        from panoramisk import Manager
    except ImportError:  # pragma: no cover - a project dependency
        raise SandboxError("test calls need panoramisk (the project's AMI client)") from None

    class OneShotManager(Manager):
        """``ready`` resolves once logged in, or fails (unreachable, wrong secret); a lost
        connection sets ``lost`` instead of reconnecting every two seconds for as long as
        the loop runs."""

        def __init__(self, **config) -> None:
            super().__init__(ping_delay=3600, **config)
            self.ready = self.loop.create_future()
            self.lost = asyncio.Event()

        def _fail(self, error: Exception) -> None:
            if not self.ready.done():
                self.ready.set_exception(error)

        def connection_made(self, f) -> None:
            if f.cancelled() or f.exception() is not None:
                self._fail(SandboxError(f"cannot reach AMI on {self.config['host']}:"
                                        f"{self.config['port']}: {f.exception()}"))
                self.lost.set()
                return
            super().connection_made(f)

        def login(self, future) -> bool:
            try:
                ok = super().login(future)
            except Exception as error:
                self._fail(SandboxError(f"AMI login failed: {error!r}"))
                return False
            if ok and not self.ready.done():
                self.ready.set_result(None)
            self._fail(SandboxError(f"AMI login refused: {future.result()!r}"))
            return ok

        def connection_lost(self, exc) -> None:
            self._connected = False
            self._fail(SandboxError("AMI connection lost"))
            self.lost.set()

    return OneShotManager


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox.py", description=__doc__.split("\n")[0])
    parser.add_argument("--root", help="the Asterisk root (IVR_ASTERISK_ROOT)")
    parser.add_argument("--sounds", help="prompt tree <dir>/id/bpjs/... (IVR_SOUNDS_DIR)")
    parser.add_argument("--agi", help="FastAGI host:port (IVR_AGI_ADDRESS)")
    parser.add_argument("--name", default="", help="instance name (default: the default one)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start Asterisk (idempotent)")
    install = commands.add_parser("install", help="only install config and sounds into the "
                                                  "root (the container's start: --root /)")
    install.add_argument("then", nargs=argparse.REMAINDER,
                         help="a command to exec afterwards (the container: asterisk ...)")
    commands.add_parser("down", help="stop Asterisk")
    commands.add_parser("restart", help="stop, then start")
    commands.add_parser("status", help='print "up" or "down"')
    cli = commands.add_parser("cli", help="run one CLI command")
    cli.add_argument("cli_command")
    call = commands.add_parser("originate", help="place a Local-channel test call")
    call.add_argument("--exten", default="1500400")
    call.add_argument("--context", default="hotline")
    call.add_argument("--keys", default="", help="SendDTMF string, w/W = 0.5/1 s pause")
    call.add_argument("--wait", type=float, default=2)
    call.add_argument("--gap", type=int, default=250, help="milliseconds between keys")
    call.add_argument("--caller-id", default="")
    call.add_argument("--hold", type=float, default=30)
    call.add_argument("--record", help="record the call as <recordings>/<NAME>.wav")
    call.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)

    try:
        sandbox = Sandbox(args.root, name=args.name, sounds_dir=args.sounds,
                          agi_address=args.agi)
        if args.command == "install":
            changed = sandbox.install_config()
            copied = sandbox.install_sounds()
            print(f"installed: {len(changed)} config files changed, {copied} sounds copied",
                  flush=True)
            if args.then:
                os.execvp(args.then[0], args.then)
        elif args.command == "up":
            started = time.monotonic()
            sandbox.up()
            print(f"up ({time.monotonic() - started:.1f} s); logs: {sandbox.log_dir}")
        elif args.command == "down":
            sandbox.down()
            print("down")
        elif args.command == "restart":
            sandbox.restart()
            print("up")
        elif args.command == "status":
            state = sandbox.status()
            print(state)
            return 0 if state == "up" else 3
        elif args.command == "cli":
            print(sandbox.cli(args.cli_command), end="")
        elif args.command == "originate":
            report = sandbox.originate_local(
                args.exten, args.context, keys=args.keys, wait=args.wait, gap_ms=args.gap,
                hold=args.hold, record=args.record, caller_id=args.caller_id,
                timeout=args.timeout)
            print(json.dumps({"tag": report.tag, "route": report.route,
                              "hangup": report.hangup, "agents": report.agents}, indent=2))
    except SandboxError as error:
        print(f"sandbox: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
