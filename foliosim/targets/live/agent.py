"""The C agent (agent.c): building it once, spawning it, and talking to it.

The binary is compiled with gcc into the cache directory (``$FOLIOSIM_CACHE``,
``$XDG_CACHE_HOME/foliosim`` or ``~/.cache/foliosim``) under a name keyed by the hash of its
source, through a temporary name and an atomic rename. Agents connect to the controller's
listening AF_UNIX SOCK_SEQPACKET socket in the abstract namespace (no file to clean up); every
agent, a forked one included, says hello with its pid, which the controller checks against the
socket's SO_PEERCRED and turns into a pidfd, so processes are only ever signalled by pidfd.
"""

from __future__ import annotations

import hashlib
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

SOURCE = Path(__file__).with_name("agent.c")

OP_HELLO, OP_MMAP, OP_MUNMAP, OP_MPROTECT, OP_MADVISE, OP_MLOCK, OP_MUNLOCK = range(1, 8)
OP_MLOCKALL, OP_MUNLOCKALL, OP_MREMAP, OP_WRITE, OP_READ, OP_FORK, OP_EXIT = range(8, 15)
OP_PIN, OP_UNPIN = 15, 16

_MSG = struct.Struct("<8Q")
_REPLY = struct.Struct("<qqQQ4Q")
_PEERCRED = struct.Struct("3i")


class AgentDied(RuntimeError):
    """An agent went away while the controller talked to it."""


class Reply(NamedTuple):
    """What one operation returned: result 0/-1, errno number (0 = none), wall time, extra."""

    result: int
    errno: int
    ns: int
    extra: int


def cache_dir() -> Path:
    """Where the compiled agent lives."""
    if os.environ.get("FOLIOSIM_CACHE"):
        return Path(os.environ["FOLIOSIM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "foliosim"


def compiler() -> str | None:
    """The C compiler used to build the agent."""
    return shutil.which("gcc") or shutil.which("cc")


def agent_path() -> Path:
    """The cache path of the agent built from the current source."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    return cache_dir() / f"agent-{digest}"


def build_agent() -> Path:
    """Compile the agent unless the cache already holds this version; returns its path.

    Static linking is tried first (a smaller, fixed set of mappings), dynamic otherwise.
    """
    path = agent_path()
    if path.exists():
        return path
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (gcc or cc) to build the live agent")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".agent-", suffix=".tmp")
    os.close(fd)
    try:
        errors = ""
        for extra in (["-static"], []):
            r = subprocess.run([cc, "-O2", "-Wall", *extra, "-o", tmp, str(SOURCE)],
                               capture_output=True, text=True)
            if r.returncode == 0:
                break
            errors = r.stderr
        else:
            raise RuntimeError(f"cannot build the live agent with {cc}:\n{errors}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class Agent:
    """The controller's end of one agent (one scenario process)."""

    def __init__(self, name: str, sock: socket.socket, pid: int,
                 popen: subprocess.Popen[bytes] | None = None) -> None:
        self.name = name
        self.sock = sock
        self.pid = pid
        self.popen = popen
        self.pidfd = os.pidfd_open(pid)
        self.alive = True

    def call(self, op: int, *args: int) -> Reply:
        """Send one operation and wait for its reply."""
        msg = _MSG.pack(op, *[a & 0xFFFFFFFFFFFFFFFF for a in args], *([0] * (7 - len(args))))
        try:
            self.sock.sendall(msg)
            data = self.sock.recv(_REPLY.size)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise AgentDied(f"agent of process {self.name!r} (pid {self.pid}) died: {e}") from None
        if len(data) != _REPLY.size:
            raise AgentDied(f"agent of process {self.name!r} (pid {self.pid}) died")
        result, err, ns, extra = _REPLY.unpack(data)[:4]
        return Reply(result, err, ns, extra)

    def died(self) -> bool:
        """Whether the process has exited (its pidfd is readable), without waiting."""
        return bool(select.select([self.pidfd], [], [], 0)[0])

    def wait_gone(self, timeout: float = 30.0) -> bool:
        """Wait until the process has exited (pidfd readable: exit_notify done, so its mm and
        files are released); reaps it when it is the controller's own child."""
        ready, _, _ = select.select([self.pidfd], [], [], timeout)
        if not ready:
            return False
        if self.popen is not None:
            self.popen.wait()
        self.alive = False
        return True

    def kill(self) -> None:
        """SIGKILL by pidfd (never by a pid that may have been reused) and wait."""
        if self.alive:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait_gone(10.0)

    def close(self) -> None:
        """Close the socket and the pidfd."""
        for close in (self.sock.close, lambda: os.close(self.pidfd)):
            try:
                close()
            except OSError:
                pass


class Listener:
    """The listening socket agents connect to (abstract namespace)."""

    def __init__(self) -> None:
        self.name = f"foliosim-live-{os.getpid()}-{os.urandom(6).hex()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.bind("\0" + self.name)
        self.sock.listen(16)

    def accept(self, timeout: float = 10.0) -> tuple[socket.socket, int]:
        """Accept one agent; returns its socket and pid (hello checked against SO_PEERCRED)."""
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except TimeoutError:
            raise AgentDied("no agent connected within "
                            f"{timeout:.0f} s (it failed to start or to fork)") from None
        conn.settimeout(None)
        pid, _, _ = _PEERCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        data = conn.recv(_MSG.size)
        if len(data) != _MSG.size or _MSG.unpack(data)[:2] != (OP_HELLO, pid):
            conn.close()
            raise AgentDied(f"agent pid {pid} did not say hello")
        return conn, pid

    def close(self) -> None:
        self.sock.close()


def spawn(binary: Path, listener: Listener, name: str, *, cpu: int | None,
          cgroup_procs: str | None, data_limit: int = 0) -> Agent:
    """Start the first agent (the process ``main``) and wait for its hello.

    It runs in a new session (a terminal's SIGINT reaches only the controller, which then
    ends the agents itself), pins itself to ``cpu``, joins the memory cgroup through
    ``cgroup_procs`` before it allocates anything, and sets RLIMIT_DATA if ``data_limit``.
    """
    popen = subprocess.Popen(
        [str(binary), "agent", listener.name, "-" if cpu is None else str(cpu),
         cgroup_procs or "-", str(data_limit)],
        stdin=subprocess.DEVNULL, close_fds=True, start_new_session=True)
    try:
        sock, pid = listener.accept()
    except BaseException:
        popen.kill()
        popen.wait()
        raise
    if pid != popen.pid:
        sock.close()
        popen.kill()
        popen.wait()
        raise AgentDied(f"unexpected agent pid {pid} (expected {popen.pid})")
    return Agent(name, sock, pid, popen)
