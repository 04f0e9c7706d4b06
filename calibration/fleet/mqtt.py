"""Connecting to the fleet's MQTT broker: the broker URL, credentials (never on the command line), TLS, and the
bounded, acknowledged publisher that ``monitor --publish`` uses.

paho-mqtt is imported inside the functions (``humwatch --help`` stays instant; the single-site workflow needs no
broker and no paho).

Credentials: ``HUMWATCH_MQTT_USER`` and ``HUMWATCH_MQTT_PASSWORD``, or a file named by ``HUMWATCH_MQTT_CREDENTIALS``
(or ``--credentials FILE``) holding ``user:password`` on its first line. TLS (``mqtts://``): the CA certificate from
``HUMWATCH_MQTT_CA`` (or ``--ca FILE``; default: the system's CAs).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from anomaly.errors import HumwatchError, HumwatchWarning
from calibration.fleet import telemetry

USER_ENV, PASSWORD_ENV, CREDENTIALS_ENV, CA_ENV = ("HUMWATCH_MQTT_USER", "HUMWATCH_MQTT_PASSWORD",
                                                   "HUMWATCH_MQTT_CREDENTIALS", "HUMWATCH_MQTT_CA")
DEFAULT_BUFFER = 50_000  # messages held while the broker is away (~28 B each + paho's bookkeeping: ~20 MB)


class BrokerError(HumwatchError):
    """A broker URL, credential or connection that cannot be used."""


class PublishWarning(HumwatchWarning):
    """Messages dropped because the buffer was full, or not acknowledged at the end."""


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None

    def __str__(self) -> str:  # never shows the password
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]`` → (host, port, tls). Refuses a URL holding credentials."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise BrokerError(f"bad broker URL {url!r}: {e}") from None
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname or u.path not in ("", "/") or u.query:
        raise BrokerError(f"broker URL must look like mqtt://HOST:PORT or mqtts://HOST:PORT, got {url!r}")
    if u.username or u.password:
        raise BrokerError("put the broker credentials in HUMWATCH_MQTT_USER/HUMWATCH_MQTT_PASSWORD or a credentials "
                          "file, not in the URL (command lines are visible to every user of the computer)")
    tls = u.scheme == "mqtts"
    return u.hostname, port or (8883 if tls else 1883), tls


def read_credentials(path: str | Path) -> tuple[str, str]:
    """``user:password`` from the first line of a file."""
    try:
        line = Path(path).read_text().splitlines()[0].strip()
    except (OSError, IndexError, UnicodeDecodeError) as e:
        raise BrokerError(f"{path}: cannot read the broker credentials ({e or 'empty file'})") from None
    user, sep, pw = line.partition(":")
    if not sep or not user:
        raise BrokerError(f"{path}: expected one line 'user:password'")
    return user, pw


def broker(url: str, credentials: str | Path | None = None, ca_file: str | Path | None = None,
           env: dict | None = None) -> Broker:
    """The broker to use: its URL plus credentials and CA from the arguments or the environment."""
    env = os.environ if env is None else env
    host, port, tls = parse_url(url)
    user, pw = env.get(USER_ENV), env.get(PASSWORD_ENV)
    cred_file = credentials or env.get(CREDENTIALS_ENV)
    if cred_file:
        user, pw = read_credentials(cred_file)
    ca = str(ca_file or env.get(CA_ENV) or "") or None
    if ca and not Path(ca).is_file():
        raise BrokerError(f"CA certificate {ca} not found")
    if ca and not tls:
        raise BrokerError(f"a CA certificate was given but {url} is not mqtts://")
    return Broker(host, port, tls, user or None, pw, ca)


_CONNACK_HELP = {"Not authorized": "wrong user name or password, or not allowed",
                 "Bad user name or password": "wrong user name or password"}


def client(b: Broker, client_id: str, clean: bool = True, manual_ack: bool = False, v5: bool = False):
    """A paho client set up for ``b``: credentials, TLS, automatic reconnection with back-off. MQTT 3.1.1 (devices)
    or, with ``v5``, MQTT 5 (the ingest: its receive maximum, not the broker's setting, bounds what is in flight)."""
    import paho.mqtt.client as paho

    if v5:
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5,
                        manual_ack=manual_ack)
    else:
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                        protocol=paho.MQTTv311, manual_ack=manual_ack)
    if b.username:
        c.username_pw_set(b.username, b.password)
    if b.tls:
        import ssl

        c.tls_set(ca_certs=b.ca_file, cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.reconnect_delay_set(min_delay=1, max_delay=8)
    return c


def describe_connack(reason_code) -> str:
    s = str(reason_code)
    return f"{s} ({_CONNACK_HELP[s]})" if s in _CONNACK_HELP else s


class Publisher:
    """Publishes telemetry at QoS 1 for one device; buffers (bounded) while the broker is away.

    paho keeps every unacknowledged QoS 1 message and re-sends it after a reconnection; the buffer bound is paho's
    queue limit. When it is full a new message is dropped, counted and reported once per outage (the score log on
    the device keeps it). ``close(wait)`` waits for the acknowledgements of what is still in flight.
    """

    def __init__(self, b: Broker, device: str, buffer: int = DEFAULT_BUFFER,
                 say: Callable[[str], None] | None = None):
        self.broker, self.device = b, telemetry.check_device(device)
        self.say = say or (lambda msg: warnings.warn(PublishWarning(msg), stacklevel=3))
        self.sent = self.acked = self.dropped = 0
        self._dropping = False
        self.connected = threading.Event()
        self.refused: str | None = None
        self._lock = threading.Lock()
        self._pending: set[int] = set()
        self._early: set[int] = set()
        self.client = client(b, device, clean=True)
        self.buffer = min(buffer, 65000)  # paho's message ids are 16-bit
        self.client.max_queued_messages_set(self.buffer)
        self.client.max_inflight_messages_set(200)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        try:
            self.client.connect_async(b.host, b.port, keepalive=30)
        except (OSError, ValueError) as e:
            raise BrokerError(f"cannot connect to {b}: {e}") from None
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.refused = describe_connack(reason_code)
            return
        self.refused = None
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._lock:  # the PUBACK may come before publish() has noted the message id
            if mid in self._pending:
                self._pending.discard(mid)
                self.acked += 1
            else:
                self._early.add(mid)

    def wait_connected(self, timeout: float) -> None:
        if not self.connected.wait(timeout):
            why = f"refused: {self.refused}" if self.refused else "no answer"
            raise BrokerError(f"cannot connect to {self.broker} as device {self.device!r} within {timeout:g} s "
                              f"({why})")

    def publish(self, topic_: str, payload: bytes, retain: bool = False) -> bool:
        """Queue one message at QoS 1; False (and counted) when the buffer is full."""
        import paho.mqtt.client as paho

        info = self.client.publish(topic_, payload, qos=1, retain=retain)  # not under self._lock: paho's
        with self._lock:                                                    # callbacks take it
            if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
                self.dropped += 1
                if not self._dropping:
                    self._dropping = True
                    self.say(f"the broker {self.broker} is away and the buffer of {self.buffer}"
                             " messages is full: dropping new scores until it drains (the local score log keeps "
                             "them)")
                return False
            if self._dropping:
                self._dropping = False
                self.say(f"publishing again; {self.dropped} message(s) dropped so far")
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.acked += 1
            else:
                self._pending.add(info.mid)
            self.sent += 1
            return True

    @property
    def unacked(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self, wait: float = 10.0) -> int:
        """Wait up to ``wait`` seconds for outstanding acknowledgements, disconnect; returns how many are unacked."""
        end = time.monotonic() + wait
        while self.unacked and time.monotonic() < end:
            time.sleep(0.05)
        left = self.unacked
        self.client.disconnect()
        self.client.loop_stop()
        return left
