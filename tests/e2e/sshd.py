"""A lab of real OpenSSH servers on 127.0.0.1 for the end-to-end tests of SSH hosts.

`SshLab` owns a private directory (0700) holding everything the tests need:

- a user key pair (ed25519, no passphrase) and an encrypted one (ed25519, passphrase
  `SshLab.passphrase`), both in `authorized_keys`;
- per `sshd` instance: host keys (ed25519, ecdsa, rsa), optionally host certificates
  signed by the lab's host CA, an `sshd_config` and a log;
- a `known_hosts`, an `ssh_config` with `Host` aliases, a `hosts.toml`, and ssh-agents
  on request.

Every instance runs `sshd -D -e` as the current user (root in CI: `PermitRootLogin
prohibit-password`) on a free loopback port. Because the "remote" host is this machine,
processes started through an instance are local processes: each instance puts a unique
`SSHLAB_INSTANCE` token in its own environment (inherited by its per-connection children)
and, through `SetEnv`, in every session's environment, so the lab can find and kill
everything it started, even processes that were reparented.

Keys are generated with `ssh-keygen` at test time. RSA keys and the encrypted key are slow
to make (~0.3 s each), so those are generated once per test process and copied; a lab
never uses the same key twice, and different labs never share a known_hosts.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import hmac
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
KEY_KINDS = ("ed25519", "ecdsa", "rsa")
# The environment variable that tags every process an instance starts.
TOKEN_VAR = "SSHLAB_INSTANCE"
# A unix socket path must fit in sun_path (108 bytes, NUL included).
SUN_PATH_MAX = 100


def _binary(name: str, *fallbacks: str) -> str | None:
    """Absolute path of a binary: PATH first, then the usual Debian locations
    (/usr/sbin is not on a non-root PATH)."""
    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    for p in fallbacks:
        if os.access(p, os.X_OK):
            return p
    return None


SSHD = _binary("sshd", "/usr/sbin/sshd")
SSH = _binary("ssh", "/usr/bin/ssh")
SSH_KEYGEN = _binary("ssh-keygen", "/usr/bin/ssh-keygen")
SSH_AGENT = _binary("ssh-agent", "/usr/bin/ssh-agent")
SSH_ADD = _binary("ssh-add", "/usr/bin/ssh-add")


def missing_binaries() -> list[str]:
    """The OpenSSH programs the lab needs that this machine lacks."""
    wanted = {"sshd": SSHD, "ssh": SSH, "ssh-keygen": SSH_KEYGEN, "ssh-agent": SSH_AGENT, "ssh-add": SSH_ADD}
    return [name for name, path in wanted.items() if path is None]


class SshLabError(RuntimeError):
    pass


# --------------------------------------------------------------------------- processes


def _scan_proc() -> dict[int, tuple[int, str, bytes, bytes]]:
    """pid -> (ppid, state, cmdline with NULs as spaces, environ) of every visible process."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            # comm may hold spaces and parentheses: the fields start after the last ')'.
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ")
            try:
                environ = (d / "environ").read_bytes()
            except OSError:
                environ = b""  # another user's process
        except OSError:
            continue  # exited meanwhile
        out[int(d.name)] = (int(fields[1]), fields[0], cmdline, environ)
    return out


def _live(state: str) -> bool:
    return state not in ("Z", "X")


def _descendants(procs: Mapping[int, tuple[int, str, bytes, bytes]], roots: Iterable[int]) -> set[int]:
    """The roots and every process below them (by ppid)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [r for r in roots if r in procs]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _kill_group(find: Callable[[], Iterable[int]]) -> None:
    """SIGKILL every process `find()` returns, with no escape by forking.

    A process that is killed first would orphan its children to init and take
    them out of a ppid walk; a live one could fork meanwhile. So everything found
    is SIGSTOPped (a stopped process cannot fork), the search repeated until it
    finds nothing new, and only then is everything SIGKILLed."""
    frozen: set[int] = set()
    for _ in range(50):
        new = set(find()) - frozen
        if not new:
            break
        _signal_all(new, signal.SIGSTOP)
        frozen |= new
    _signal_all(frozen, signal.SIGKILL)
    # SIGCONT is harmless after SIGKILL and releases any stop that raced the kill.
    _signal_all(frozen, signal.SIGCONT)


def pids_with_cmdline(marker: str) -> list[int]:
    """Live processes other than this one whose command line contains `marker`."""
    needle = marker.encode()
    me = os.getpid()
    return sorted(
        pid
        for pid, (_ppid, state, cmdline, _env) in _scan_proc().items()
        if pid != me and _live(state) and needle in cmdline
    )


# --------------------------------------------------------------------------- keys


def _run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, **kw)
    if r.returncode != 0:
        raise SshLabError(f"{' '.join(map(str, argv))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def _keygen_argv(kind: str, path: Path, passphrase: str) -> list[str]:
    assert SSH_KEYGEN is not None
    bits = ["-b", "2048"] if kind == "rsa" else []  # 2048 is the fastest size OpenSSH accepts by default
    return [SSH_KEYGEN, "-q", "-t", kind, *bits, "-N", passphrase, "-C", f"sshlab-{kind}", "-f", str(path)]


# Slow keys, made once per test process: (kind, passphrase) -> [(private, public), ...].
_POOL: dict[tuple[str, str], list[tuple[bytes, bytes]]] = {}


def _slow(kind: str, passphrase: str) -> bool:
    return kind == "rsa" or passphrase != ""


def generate_keys(specs: list[tuple[str, Path, str]], pool_offsets: dict[tuple[str, str], int]) -> None:
    """Write each (kind, path, passphrase) key pair (`path`, `path.pub`, mode 0600).

    Fast keys are generated in parallel, straight into place. Slow ones (rsa, encrypted)
    come from the process-wide pool, the n-th slow key of a kind going to
    `pool_offsets[kind] + n` (the caller's counter, advanced here) so one lab never reuses
    a key."""
    procs = []
    fill: list[tuple[tuple[str, str], int, Path]] = []
    for kind, path, passphrase in specs:
        if _slow(kind, passphrase):
            slot = (kind, passphrase)
            idx = pool_offsets.get(slot, 0)
            pool_offsets[slot] = idx + 1
            fill.append((slot, idx, path))
        else:
            procs.append(subprocess.Popen(_keygen_argv(kind, path, passphrase), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    # Grow the pool for what is missing, in parallel too, in a scratch dir.
    need: dict[tuple[str, str], int] = {}
    for slot, idx, _ in fill:
        need[slot] = max(need.get(slot, 0), idx + 1)
    with tempfile.TemporaryDirectory(prefix="sshlab-pool-") as scratch:
        made = []
        for slot, count in need.items():
            have = len(_POOL.setdefault(slot, []))
            for i in range(have, count):
                p = Path(scratch) / f"{slot[0]}-{'enc' if slot[1] else 'plain'}-{i}"
                made.append((slot, p, subprocess.Popen(_keygen_argv(slot[0], p, slot[1]), stdin=subprocess.DEVNULL,
                                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
        for slot, p, proc in made:
            out, _ = proc.communicate(timeout=60)
            if proc.returncode != 0:
                raise SshLabError(f"ssh-keygen {slot[0]} failed: {out.decode(errors='replace')}")
            _POOL[slot].append((p.read_bytes(), Path(f"{p}.pub").read_bytes()))
    for slot, idx, path in fill:
        private, public = _POOL[slot][idx]
        path.write_bytes(private)
        path.chmod(0o600)
        Path(f"{path}.pub").write_bytes(public)
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise SshLabError(f"ssh-keygen failed: {out.decode(errors='replace')}")


def public_key(path: Path) -> str:
    """`type base64` of a public key file (no comment)."""
    kind, blob = Path(path).read_text().split()[:2]
    return f"{kind} {blob}"


def fingerprint(pub: str) -> str:
    """The SHA256 fingerprint of `type base64` as OpenSSH prints it (`SHA256:…`, no padding)."""
    blob = base64.b64decode(pub.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def hash_host(name: str, salt: bytes | None = None) -> str:
    """A hashed known_hosts name as `ssh-keygen -H` writes it: |1|base64(salt)|base64(HMAC-SHA1(salt, name))."""
    salt = salt if salt is not None else os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def _q(value: object) -> str:
    """An ssh_config / sshd_config argument, quoted when it holds blanks."""
    s = str(value)
    if any(c.isspace() for c in s) or s == "":
        if '"' in s:
            raise SshLabError(f"cannot quote {s!r} for an ssh config")
        return f'"{s}"'
    return s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _read_banner(port: int, timeout: float) -> bytes | None:
    """The server's identification line, or None if nothing answers yet."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            data = b""
            while b"\n" not in data and len(data) < 1024:
                chunk = s.recv(256)
                if not chunk:
                    return None
                data += chunk
            return data.split(b"\n", 1)[0].rstrip(b"\r")
    except OSError:
        return None


# --------------------------------------------------------------------------- sshd


class Sshd:
    """One `sshd` instance of a lab. Created and started by `SshLab.start_sshd`."""

    def __init__(self, lab: SshLab, name: str, max_sessions: int, extra_config: str, host_certs: bool,
                 log_level: str, user_rc: bool):
        self.lab = lab
        self.name = name
        self.max_sessions = max_sessions
        self.extra_config = extra_config
        self.host_certs = host_certs
        self.log_level = log_level
        self.user_rc = user_rc
        self.dir = lab.root / "sshd" / name
        self.dir.mkdir(parents=True, mode=0o700)
        self.config = self.dir / "sshd_config"
        self.log_path = self.dir / "sshd.log"
        self.token = f"{name}-{uuid.uuid4().hex}"
        self.port: int = 0
        self.proc: subprocess.Popen[bytes] | None = None
        # kind -> private host key path (the public key is next to it, `.pub`).
        self.host_keys: dict[str, Path] = {}
        self.host_cert_paths: dict[str, Path] = {}
        self._key_generation = 0
        self.new_host_keys()

    def __repr__(self) -> str:
        return f"<Sshd {self.name} {HOST}:{self.port} {'running' if self.running else 'stopped'}>"

    # -- keys

    def new_host_keys(self) -> None:
        """Switch to a fresh set of host keys (and certificates). `public_key()` gives the new
        ones at once; the server serves them from its next `start()`/`restart()`."""
        gen = self._key_generation
        self._key_generation += 1
        keys = {k: self.dir / f"ssh_host_{k}_key{f'.{gen}' if gen else ''}" for k in KEY_KINDS}
        generate_keys([(k, p, "") for k, p in keys.items()], self.lab._pool_offsets)
        self.host_keys = keys
        self.host_cert_paths = {}
        if self.host_certs:
            ca = self.lab.host_ca()
            for kind, path in keys.items():
                # -n: the principals ssh checks a host certificate against (the HostName).
                _run([SSH_KEYGEN, "-q", "-s", str(ca), "-I", f"sshlab-{self.name}", "-h", "-n", f"{HOST},localhost",
                      f"{path}.pub"])
                self.host_cert_paths[kind] = Path(f"{path}-cert.pub")

    def public_key(self, kind: str = "ed25519") -> str:
        """`type base64` of this instance's host key of `kind`."""
        return public_key(Path(f"{self.host_keys[kind]}.pub"))

    def fingerprint(self, kind: str = "ed25519") -> str:
        return fingerprint(self.public_key(kind))

    @property
    def host_pattern(self) -> str:
        """How known_hosts names this server: `[127.0.0.1]:PORT`."""
        return f"[{HOST}]:{self.port}"

    # -- config and process

    def _write_config(self) -> None:
        lab = self.lab
        lines = [
            f"ListenAddress {HOST}:{self.port}",
            *(f"HostKey {_q(p)}" for p in self.host_keys.values()),
            *(f"HostCertificate {_q(p)}" for p in self.host_cert_paths.values()),
            f"AuthorizedKeysFile {_q(lab.authorized_keys)}",
            "PidFile none",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            # The lab dir is root-owned 0700 but lives under a world-writable tmp dir.
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            f"MaxSessions {self.max_sessions}",
            "Subsystem sftp internal-sftp",
            f"LogLevel {self.log_level}",
            "AllowTcpForwarding yes",
            "ClientAliveInterval 0",
            "PrintMotd no",
            "PrintLastLog no",
        ]
        # sshd keeps the first value of a keyword, so extra lines come first to override the
        # lab's; but a `Match` block runs to the end of the file, so that part goes last.
        extra = self.extra_config.strip().splitlines()
        cut = next((i for i, x in enumerate(extra) if x.strip().lower().startswith("match ")), len(extra))
        head, tail = extra[:cut], extra[cut:]
        # Only the first SetEnv line counts too: the lab's variables join the caller's.
        setenv = [x.split(None, 1)[1] for x in head if x.strip().lower().startswith("setenv ")]
        head = [x for x in head if not x.strip().lower().startswith("setenv ")]
        # The token tags every session's processes, so the lab finds what ran "remotely".
        setenv.append(f"{TOKEN_VAR}={self.token}")
        if not self.user_rc:
            # The login user's dotfiles are this machine's, not part of the lab (here root's
            # ~/.bashrc runs `pyenv init`: 0.4 s per command, and a 60 s hang on pyenv's lock
            # when a killed session leaves it behind). Debian's bash sources ~/.bashrc for a
            # command run by sshd only in a top-level shell (SHLVL < 2 after its increment),
            # so SHLVL=1 skips it (the one visible effect: sessions see SHLVL=2, not 1).
            setenv.append("SHLVL=1")
            lines.append("PermitUserRC no")
        lines.append("SetEnv " + " ".join(setenv))
        self.config.write_text("\n".join([*head, *lines, *tail]) + "\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """What sshd wrote to stderr (everything at `log_level` and above)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, port: int | None = None, timeout: float = 10.0) -> None:
        """Start the listener on `port` (a free one when None; the current one on restart)
        and wait until it sends its SSH banner."""
        if self.running:
            raise SshLabError(f"sshd {self.name} is already running")
        assert SSHD is not None
        fixed = port is not None
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            self.port = port if fixed else _free_port()
            self._write_config()
            with open(self.log_path, "ab") as log:
                log.write(f"--- start {attempt} on port {self.port}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    [SSHD, "-D", "-e", "-f", str(self.config)],
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), TOKEN_VAR: self.token},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,  # a ^C to pytest must not reach it before teardown does
                )
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                banner = _read_banner(self.port, timeout=max(0.1, min(1.0, deadline - time.monotonic())))
                if banner is not None and banner.startswith(b"SSH-2.0-"):
                    return
                time.sleep(0.01)
            exited = self.proc.poll() is not None
            if not exited:
                self.kill()
            log_text = self.log()
            # A free port can be taken between our probe and sshd's bind; the fixed port of a
            # restart can still be held briefly. Both are worth another try.
            in_use = "Address already in use" in log_text.rsplit("--- start", 1)[-1]
            if exited and in_use and time.monotonic() < deadline:
                time.sleep(0.05 if not fixed else 0.2)
                continue
            why = f"exited with {self.proc.returncode}" if exited else f"sent no SSH banner within {timeout}s"
            raise SshLabError(f"sshd {self.name} on port {self.port} {why}; config {self.config}; log:\n{log_text}")

    def restart(self, timeout: float = 10.0) -> None:
        """Stop the listener and start it again on the same port with the same host keys
        (connections open meanwhile stay up, as with `systemctl restart ssh`)."""
        self.stop()
        self.start(port=self.port, timeout=timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the listener (SIGKILL after `timeout`). Like `systemctl stop ssh`, open
        connections and their sessions are left alone; `kill()` ends those too."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def pids(self, sessions: bool = True) -> list[int]:
        """Live processes of this instance: the listener, its per-connection sshd children,
        and (with `sessions`) everything running in its sessions. Found by a ppid walk from
        the listener and by the instance token in the environment, which also catches
        processes whose parent died."""
        procs = _scan_proc()
        needle = f"{TOKEN_VAR}={self.token}".encode()
        roots = {pid for pid, (_p, _s, _c, env) in procs.items() if needle in env.split(b"\0")}
        if self.proc is not None:
            roots.add(self.proc.pid)
        found = _descendants(procs, roots) if sessions else roots & set(procs)
        if not sessions:
            # Only sshd processes: the ones started from the sshd binary, not the sessions.
            found = {p for p in found if procs[p][2].startswith(b"sshd") or procs[p][2].startswith(SSHD.encode())}
        me = os.getpid()
        return sorted(p for p in found if p != me and _live(procs[p][1]))

    def connections(self) -> list[int]:
        """The per-connection sshd processes: direct children of the listener (one per TCP
        connection, authenticated or not)."""
        if not self.running:
            return []
        assert self.proc is not None
        return sorted(
            pid
            for pid, (ppid, state, cmdline, _env) in _scan_proc().items()
            if ppid == self.proc.pid and _live(state) and cmdline.startswith(b"sshd")
        )

    def kill(self, sessions: bool = True) -> None:
        """Crash the host: SIGKILL the listener and every per-connection sshd (clients see
        the TCP connection reset), and with `sessions` everything running in its sessions,
        as if the machine had vanished."""
        _kill_group(lambda: self.pids(sessions=sessions))
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- lab


class SshLab:
    """A private directory with keys, configs and `sshd` instances; see the module doc.

    Use as a context manager or call `close()`: it kills every instance (with its
    sessions) and every agent it started."""

    passphrase = "correct horse battery staple"

    def __init__(self, base: str | os.PathLike[str] | None = None):
        missing = missing_binaries()
        if missing:
            raise SshLabError(f"OpenSSH programs missing: {', '.join(missing)}")
        self._remove_root = base is None  # a pytest tmp_path is kept for inspection
        self.root = Path(tempfile.mkdtemp(prefix="sshlab-", dir=base))
        self.root.chmod(0o700)
        self.user = getpass.getuser()
        self.sshds: dict[str, Sshd] = {}
        self._agents: list[subprocess.Popen[bytes]] = []
        self._scratch: list[Path] = []
        self._pool_offsets: dict[tuple[str, str], int] = {}
        self._ca: Path | None = None
        self.agent_sock: Path | None = None

        self.authorized_keys = self.root / "authorized_keys"
        self.known_hosts = self.root / "known_hosts"
        self.ssh_config = self.root / "ssh_config"
        self.hosts_toml = self.root / "hosts.toml"
        self.user_key = self.root / "id_ed25519"
        self.encrypted_key = self.root / "id_ed25519_enc"
        generate_keys([("ed25519", self.user_key, ""), ("ed25519", self.encrypted_key, self.passphrase)],
                      self._pool_offsets)
        self.authorized_keys.write_text(
            "".join(f"{public_key(Path(f'{k}.pub'))} sshlab\n" for k in (self.user_key, self.encrypted_key))
        )
        self.known_hosts.touch(mode=0o600)
        self.ssh_config.write_text("")
        self._ensure_privsep_dir()

    def __enter__(self) -> SshLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _ensure_privsep_dir() -> None:
        # sshd started as root chroots its pre-auth child into /run/sshd and refuses to
        # start without it (Debian creates it from a systemd unit, which a container lacks).
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    # -- servers

    def start_sshd(self, name: str, max_sessions: int = 10, extra_config: str = "", *, host_certs: bool = False,
                   log_level: str | None = None, user_rc: bool = False) -> Sshd:
        """Start an sshd named `name` on a free loopback port.

        `extra_config` lines go before the lab's own, so they override them (sshd keeps the
        first value of a keyword); from its first `Match` line on, they go last, and its
        `SetEnv` variables join the lab's. With `host_certs`, its host keys also get
        certificates signed by `host_ca()`. `log_level` defaults to $SSHLAB_LOG_LEVEL or
        ERROR. Sessions skip the login user's ~/.bashrc and ~/.ssh/rc unless `user_rc`
        (see `Sshd._write_config`)."""
        if name in self.sshds:
            raise SshLabError(f"sshd {name} already exists")
        sshd = Sshd(self, name, max_sessions, extra_config, host_certs,
                    log_level or os.environ.get("SSHLAB_LOG_LEVEL", "ERROR"), user_rc)
        self.sshds[name] = sshd
        sshd.start()
        return sshd

    def __getitem__(self, name: str) -> Sshd:
        return self.sshds[name]

    def host_ca(self) -> Path:
        """The lab's host certificate authority (ed25519 private key path), made on first use."""
        if self._ca is None:
            self._ca = self.root / "host_ca"
            generate_keys([("ed25519", self._ca, "")], self._pool_offsets)
        return self._ca

    def spare_key(self, kind: str = "ed25519") -> str:
        """`type base64` of a fresh host key no server uses (for changed-key tests)."""
        d = Path(tempfile.mkdtemp(prefix="spare-", dir=self.root))
        generate_keys([(kind, d / "key", "")], self._pool_offsets)
        return public_key(d / "key.pub")

    # -- known_hosts

    def known_hosts_line(self, sshd: Sshd | None, *, key: str = "ed25519", hashed: bool = False,
                         marker: str | None = None, pattern: str | None = None, changed: bool = False) -> str:
        """A known_hosts line for `sshd`'s host key of type `key` ("all": one line per type).

        `pattern` replaces the host name `[127.0.0.1]:PORT` (`{port}` in it is replaced by
        the port, e.g. "[127.0.0.*]:{port}" or "[127.0.0.1]:{port},web1"); `hashed` writes it
        as `|1|salt|hmac`; `marker` is "@revoked" or "@cert-authority"; `changed` puts a
        fresh key that the server does not have in place of the real one."""
        if key == "all":
            return "\n".join(self.known_hosts_line(sshd, key=k, hashed=hashed, marker=marker, pattern=pattern,
                                                   changed=changed) for k in KEY_KINDS)
        if pattern is None:
            if sshd is None:
                raise SshLabError("known_hosts_line needs an sshd or a pattern")
            pattern = sshd.host_pattern
        elif sshd is not None:
            pattern = pattern.replace("{port}", str(sshd.port))
        if hashed:
            if "," in pattern or "*" in pattern or "?" in pattern or pattern.startswith("!"):
                raise SshLabError(f"a hashed entry names one host, not {pattern!r}")
            pattern = hash_host(pattern)
        if changed or sshd is None:
            pub = self.spare_key(key)
        else:
            pub = sshd.public_key(key)
        if marker is not None and marker not in ("@revoked", "@cert-authority"):
            raise SshLabError(f"unknown known_hosts marker {marker!r}")
        return " ".join(filter(None, [marker, pattern, pub]))

    def known_hosts_add(self, sshd: Sshd | None, *, hashed: bool = False, marker: str | None = None,
                        pattern: str | None = None, key: str = "ed25519", changed: bool = False,
                        path: str | os.PathLike[str] | None = None) -> str:
        """Append `known_hosts_line(...)` to `path` (default the lab's known_hosts); returns it."""
        line = self.known_hosts_line(sshd, key=key, hashed=hashed, marker=marker, pattern=pattern, changed=changed)
        with open(path or self.known_hosts, "a") as f:
            f.write(line + "\n")
        return line

    def known_hosts_add_ca(self, pattern: str = f"[{HOST}]:*", *, path: str | os.PathLike[str] | None = None) -> str:
        """Append `@cert-authority PATTERN <host CA>`: trusts every instance started with
        `host_certs=True` whose host name matches `pattern`."""
        line = f"@cert-authority {pattern} {public_key(Path(f'{self.host_ca()}.pub'))}"
        with open(path or self.known_hosts, "a") as f:
            f.write(line + "\n")
        return line

    def write_known_hosts(self, lines: Iterable[str], path: str | os.PathLike[str] | None = None) -> Path:
        """Replace a known_hosts file (default the lab's) with `lines`."""
        p = Path(path or self.known_hosts)
        p.write_text("".join(f"{line}\n" for line in lines))
        return p

    # -- client configuration

    def host_entry(self, alias: str, spec: Sshd | Mapping[str, Any]) -> str:
        """One `Host` block; see `write_ssh_config` for `spec`."""
        if isinstance(spec, Sshd):
            spec = {"sshd": spec}
        spec = dict(spec)
        sshd: Sshd | None = spec.pop("sshd", None)
        port = spec.pop("port", sshd.port if sshd else None)
        lines = [f"Host {alias}", f"  HostName {spec.pop('hostname', HOST)}"]
        if port is not None:
            lines.append(f"  Port {port}")
        lines.append(f"  User {spec.pop('user', self.user)}")
        identity = spec.pop("identity", self.user_key)
        if identity is not None:
            for ident in identity if isinstance(identity, (list, tuple)) else [identity]:
                lines.append(f"  IdentityFile {_q(ident)}")
        if spec.pop("identities_only", True):
            lines.append("  IdentitiesOnly yes")
        known = spec.pop("known_hosts", self.known_hosts)
        if known is not None:
            files = known if isinstance(known, (list, tuple)) else [known]
            lines.append("  UserKnownHostsFile " + " ".join(_q(f) for f in files))
        jump = spec.pop("proxy_jump", None)
        if jump:
            lines.append(f"  ProxyJump {jump}")
        extra = spec.pop("extra", ())
        for line in [extra] if isinstance(extra, str) else extra:
            lines.extend(f"  {x.strip()}" for x in line.strip().splitlines() if x.strip())
        if spec:
            raise SshLabError(f"unknown host entry fields for {alias}: {sorted(spec)}")
        return "\n".join(lines) + "\n"

    def write_ssh_config(self, entries: Mapping[str, Sshd | Mapping[str, Any]],
                         path: str | os.PathLike[str] | None = None, header: str = "") -> Path:
        """Write an ssh_config (default the lab's `ssh_config`, replaced) with one `Host`
        block per alias, in order, after `header` (raw text, e.g. an `Include`).

        An entry is an Sshd or a dict with: `sshd` (gives the port), `hostname` (default
        127.0.0.1), `port`, `user` (default the current user), `identity` (path or list;
        default the lab's user key; None for none), `identities_only` (default True),
        `known_hosts` (path or list; default the lab's; None to leave ssh's default),
        `proxy_jump`, `extra` (more lines, a string or a list)."""
        p = Path(path or self.ssh_config)
        blocks = [header.rstrip() + "\n"] if header.strip() else []
        blocks += [self.host_entry(alias, spec) for alias, spec in entries.items()]
        p.write_text("\n".join(blocks))
        return p

    def add_hosts(self, entries: Mapping[str, Sshd | Mapping[str, Any]],
                  path: str | os.PathLike[str] | None = None) -> Path:
        """Append `Host` blocks (as `write_ssh_config` makes them) to an ssh_config."""
        p = Path(path or self.ssh_config)
        with open(p, "a") as f:
            f.write("".join("\n" + self.host_entry(alias, spec) for alias, spec in entries.items()))
        return p

    def write_hosts_toml(self, hosts: Iterable[Mapping[str, Any]], path: str | os.PathLike[str] | None = None) -> Path:
        """Write mcpsh's hosts.toml: one `[[host]]` table per dict (name, address, user,
        port, key, tags; values are strings, ints or lists of strings)."""

        def value(v: Any) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, int):
                return str(v)
            if isinstance(v, (list, tuple)):
                return "[" + ", ".join(value(x) for x in v) + "]"
            s = str(v).replace("\\", "\\\\").replace('"', '\\"')
            return f'"{s}"'

        p = Path(path or self.hosts_toml)
        p.write_text("".join("[[host]]\n" + "".join(f"{k} = {value(v)}\n" for k, v in h.items()) + "\n"
                             for h in hosts))
        return p

    # -- agents

    def start_agent(self, key: str | os.PathLike[str] | None = None, passphrase: str | None = None) -> Path:
        """Start an ssh-agent holding `key` (default the user key; the encrypted key is
        unlocked with the lab's passphrase) and make it the lab's agent for `env()` and
        `ssh()`. Returns its socket path. Killed by `close()`."""
        assert SSH_AGENT is not None and SSH_ADD is not None
        key = Path(key or self.user_key)
        if passphrase is None and key == self.encrypted_key:
            passphrase = self.passphrase
        sock = self.root / f"agent{len(self._agents)}.sock"
        if len(str(sock)) > SUN_PATH_MAX:  # a deep pytest tmp_path
            short = Path(tempfile.mkdtemp(prefix="sshlab-"))
            self._scratch.append(short)
            sock = short / "agent.sock"
        with open(self.root / f"agent{len(self._agents)}.log", "ab") as log:
            # -D: stay in the foreground, so this Popen is the agent and can be killed.
            proc = subprocess.Popen([SSH_AGENT, "-D", "-a", str(sock)], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log, start_new_session=True)
        self._agents.append(proc)
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SshLabError(f"ssh-agent did not create {sock}")
            time.sleep(0.01)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        if passphrase is not None:
            # ssh-add reads a passphrase only from a tty or SSH_ASKPASS: a script echoing it.
            askpass = self.root / "askpass"
            askpass.write_text('#!/bin/sh\nprintf "%s\\n" "$SSHLAB_PASSPHRASE"\n')
            askpass.chmod(0o700)
            env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", SSHLAB_PASSPHRASE=passphrase)
        _run([SSH_ADD, "-q", str(key)], env=env)
        self.agent_sock = sock
        return sock

    # -- using the lab

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment to start mcpsh with (`base`, default os.environ, plus the lab):
        MCPSH_SSH_CONFIG, MCPSH_HOSTS_TOML, and SSH_AUTH_SOCK only for the lab's agent."""
        env = dict(os.environ if base is None else base)
        env["MCPSH_SSH_CONFIG"] = str(self.ssh_config)
        env["MCPSH_HOSTS_TOML"] = str(self.hosts_toml)
        env.pop("SSH_AUTH_SOCK", None)
        if self.agent_sock is not None:
            env["SSH_AUTH_SOCK"] = str(self.agent_sock)
        return env

    def ssh_argv(self, alias: str, cmd: str | None = None, options: Iterable[str] = ()) -> list[str]:
        """The OpenSSH client command line `ssh(alias, cmd)` runs."""
        assert SSH is not None
        argv = [SSH, "-F", str(self.ssh_config), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        for opt in options:
            argv += ["-o", opt]
        argv += ["--", alias]
        if cmd is not None:
            argv.append(cmd)
        return argv

    def ssh(self, alias: str, cmd: str, *, options: Iterable[str] = (), input: str | None = None,
            timeout: float = 30.0, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run `cmd` on `alias` with the real OpenSSH client and the lab's ssh_config
        (`options` are extra `-o` settings)."""
        r = subprocess.run(self.ssh_argv(alias, cmd, options), env=self.env(), input=input,
                           stdin=None if input is not None else subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise SshLabError(f"ssh {alias} {cmd!r} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        return r

    def remote_pids(self, pattern: str, sshd: Sshd | None = None) -> list[int]:
        """Live processes whose command line contains `pattern`; with `sshd`, only those of
        that instance (its sessions). "Remote" processes of the lab are local ones, so
        without `sshd` this also sees local processes (an `ssh` client running that command)."""
        found = pids_with_cmdline(pattern)
        if sshd is not None:
            mine = set(sshd.pids())
            found = [p for p in found if p in mine]
        return found

    def wait_no_remote_pids(self, pattern: str, timeout: float = 10.0, sshd: Sshd | None = None) -> list[int]:
        """Wait until `remote_pids(pattern)` is empty; returns what is left at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.remote_pids(pattern, sshd)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)

    # -- teardown

    def close(self) -> None:
        """Kill every sshd (with its sessions) and agent; remove the lab dir unless it lives
        in a caller's (pytest's) tmp dir."""
        errors = []
        # What runs in the sessions is asked to end first (SIGTERM): a start-up
        # file caught midway then runs its exit trap (see `Server.cleanup` in
        # conftest.py).
        asked = False
        for sshd in self.sshds.values():
            in_sessions = set(sshd.pids(sessions=True)) - set(sshd.pids(sessions=False))
            _signal_all(in_sessions, signal.SIGTERM)
            asked = asked or bool(in_sessions)
        if asked:
            time.sleep(0.3)
        for sshd in self.sshds.values():
            try:
                sshd.kill(sessions=True)
            except Exception as e:  # keep tearing down the rest
                errors.append(f"{sshd.name}: {e}")
        for proc in self._agents:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for d in self._scratch:
            shutil.rmtree(d, ignore_errors=True)
        if self._remove_root:
            shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise SshLabError("teardown: " + "; ".join(errors))
