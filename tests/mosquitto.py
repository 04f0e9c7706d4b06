"""A real Mosquitto broker for tests and benches: a free loopback port, a generated configuration (no anonymous
access, a password file made with ``mosquitto_passwd``, the per-site topic ACL of docs/fleet.md, persistence so a
restart keeps queued messages), optional TLS with a CA made here by ``openssl``; start, stop (SIGTERM or SIGKILL),
restart on the same port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
OPENSSL = shutil.which("openssl")
MISSING = None if MOSQUITTO and MOSQUITTO_PASSWD else (
    "Debian's mosquitto is not installed (`make test` installs it with apt-get where it runs as root with network "
    "access to the archive)")

# The ACL of docs/fleet.md: a device's user name is its site, its client id the device id; the ingest reads all.
ACL = """\
user {ingest}
topic read humwatch/v1/#

pattern write humwatch/v1/%u/%c/#
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_ca(d: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1/localhost (openssl, ~0.2 s)."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, crt = (d / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ext = d / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *a: subprocess.run([OPENSSL, *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2", "-subj",
        "/CN=humwatch test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", crt, "-days", "2",
        "-extfile", ext)
    return ca, crt, key


class Broker:
    """``Broker(dir, users={"pump-3": "pw", ...}).start()``; ``url``; ``stop(kill=False)``; ``start()`` again."""

    def __init__(self, d: Path, users: dict[str, str] | None = None, ingest: str = "ingest",
                 ingest_password: str = "ingest-pw", tls: bool = False, acl: bool = True, anonymous: bool = False):
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.users = {ingest: ingest_password, **(users or {})}
        self.ingest = ingest
        self.tls, self.proc = tls, None
        self.ca = None
        self.log = self.dir / "mosquitto.log"
        self._write_config(acl, anonymous)

    def _write_config(self, acl: bool, anonymous: bool) -> None:
        pw = self.dir / "passwd"
        pw.write_text("")
        for u, p in self.users.items():
            subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), u, p], check=True, capture_output=True)
        (self.dir / "acl").write_text(ACL.format(ingest=self.ingest))
        import pwd

        # as root, mosquitto drops to the user "mosquitto", which cannot read a private temp directory: keep ours
        lines = [f"user {pwd.getpwuid(os.getuid()).pw_name}", f"listener {self.port} 127.0.0.1",
                 f"allow_anonymous {'true' if anonymous else 'false'}",
                 f"password_file {pw}", "persistence true", f"persistence_location {self.dir}/",
                 "autosave_interval 1", "max_queued_messages 1000000", "max_inflight_messages 0",
                 f"log_dest file {self.log}", "log_type error", "log_type warning", "log_type notice"]
        if acl:
            lines.append(f"acl_file {self.dir / 'acl'}")
        if self.tls:
            self.ca, crt, key = make_ca(self.dir / "tls")
            lines += [f"cafile {self.ca}", f"certfile {crt}", f"keyfile {key}"]
        (self.dir / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Broker:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()[:500]} "
                                   f"{self.log.read_text()[-500:] if self.log.exists() else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def env(self, user: str) -> dict:
        """Environment variables that give a humwatch command this user's credentials (and the CA)."""
        e = {"HUMWATCH_MQTT_USER": user, "HUMWATCH_MQTT_PASSWORD": self.users[user]}
        if self.ca:
            e["HUMWATCH_MQTT_CA"] = str(self.ca)
        return e
