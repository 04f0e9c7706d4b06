"""The fleet over a real Mosquitto broker: devices publish, `humwatch ingest` logs; the broker is stopped and restarted
mid-stream and the ingest is SIGKILLed mid-stream, and no acknowledged score is lost or duplicated; a device's
credential cannot write into another site; bad messages are counted, never fatal; TLS."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from helpers import small_model, valid_record
from mosquitto import MISSING, Broker

from calibration.fleet import telemetry as tm
from calibration.fleet.ingest import Ingest, IngestConfig
from calibration.fleet.mqtt import BrokerError, Publisher, broker
from calibration.monitoring.scorelog import read_alarms, read_gaps, read_scores
from calibration.store import SiteConfig, SiteStore

pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

_IDS = itertools.count()
HUMWATCH = Path(sys.executable).parent / "humwatch"
ROOT = Path(__file__).resolve().parents[1]
USERS = {"pump-3": "pw-3", "pump-4": "pw-4", "ghost": "pw-g"}
THRESHOLD = 1.0
DEADLINE = 120.0  # s: what a `humwatch ingest` process gets to start or catch up (a loaded machine is slow)


def _store(root: Path) -> SiteStore:
    store = SiteStore(root)
    for name in ("pump-3", "pump-4"):
        s = store.create(SiteConfig(name=name, model_path="model", model_hash="m0"))
        s.add_calibration(valid_record(THRESHOLD, site=name, model={**valid_record()["model"], "hash": "m0"}))
    return store


@pytest.fixture(scope="module")
def mq(tmp_path_factory):
    d = tmp_path_factory.mktemp("mqtt")
    b = Broker(d / "broker", users=USERS).start()
    yield b, d
    b.stop(kill=True)


@contextmanager
def ingest_thread(b: Broker, store: SiteStore, client_id: str | None = None, **kw):
    cid = client_id or f"ingest-{next(_IDS)}"  # each test its own broker session
    ing = Ingest(IngestConfig(broker(b.url, env=b.env("ingest")), store, client_id=cid, commit_s=0.1, **kw),
                 say=lambda m: None)
    ing.start()
    ing.wait_connected(10)
    th = threading.Thread(target=ing.run, daemon=True)
    th.start()
    try:
        yield ing
    finally:
        ing.stop()
        th.join(10)


@pytest.fixture
def ingest_process(mq):
    """``start(args, env=...)`` runs ``humwatch ingest ARGS`` against the broker in a process group of its own;
    whatever is still running when the test ends (an assertion failed, the test killed and restarted it) is stopped:
    SIGTERM, then SIGKILL for the group after 20 s."""
    b, _ = mq
    procs: list[subprocess.Popen] = []

    def start(args: list[str], **kw) -> subprocess.Popen:
        env = {**os.environ, **b.env("ingest"), "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([str(HUMWATCH), "ingest", "--broker", b.url, *map(str, args)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **kw)
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            _stop(proc)


def _stop(proc: subprocess.Popen, grace: float = 20.0) -> str:
    """Stop a process (SIGTERM; its group SIGKILLed after ``grace`` s) and return its output."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out = proc.communicate(timeout=grace)[0]
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out = proc.communicate()[0]
    return (out or b"").decode(errors="replace")


def _publisher(b: Broker, user: str, device: str, **kw) -> Publisher:
    p = Publisher(broker(b.url, env=b.env(user)), device, say=lambda m: None, **kw)
    p.wait_connected(10)
    return p


def _wait(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _ingest_connected(ing: subprocess.Popen, stats: Path) -> None:
    """Wait until the ingest process has connected (and so subscribed): its ``--stats`` file counts a connect.
    Messages published before its first subscription are not kept for it."""

    def connected() -> bool:
        try:
            return json.loads(stats.read_text()).get("connects", 0) >= 1
        except (FileNotFoundError, ValueError):
            return False

    assert _wait(lambda: connected() or ing.poll() is not None, DEADLINE), "ingest did not connect"
    assert ing.poll() is None, _stop(ing)


def _rows(store, site="pump-3"):
    p = store.site(site).dir / "scores.sqlite"
    return read_scores(p) if p.exists() else None


def test_no_acknowledged_score_lost_or_duplicated_across_broker_restart_and_ingest_kill(mq, ingest_process,
                                                                                         tmp_path):
    """A device publishes 900 patches; during the stream the broker is stopped and restarted (the device buffers),
    and the ingest process is SIGKILLed and restarted (its unacknowledged messages come again)."""
    b, _ = mq
    store = _store(tmp_path / "sites")
    args = ["--sites-dir", store.root, "--client-id", "ing-kill", "--stats", tmp_path / "stats.json"]
    ing = ingest_process(args)
    _ingest_connected(ing, tmp_path / "stats.json")
    pub = _publisher(b, "pump-3", "dev-a")
    t0 = time.time() - 1000
    n = 900
    for i in range(n):
        pub.publish(tm.topic("pump-3", "dev-a", tm.KIND_PATCH), tm.patch("pump-3", i, t0 + i * 0.96, 0.1 + i / 1e4,
                                                                        False, boot=1))
        if i == 200:
            b.stop()  # graceful: the broker saves its persistent sessions
        if i == 400:
            b.start()
            assert pub.connected.wait(15), "the device did not reconnect"
        if i == 550:
            assert _wait(lambda: pub.unacked < 50)
            os.kill(ing.pid, signal.SIGKILL)
            ing.wait()
        if i == 650:
            ing = ingest_process(args)
        if i % 50 == 0:
            time.sleep(0.05)
    assert pub.close(wait=DEADLINE) == 0 and pub.acked == n and pub.dropped == 0
    assert _wait(lambda: (df := _rows(store)) is not None and len(df) >= n or ing.poll() is not None, DEADLINE)
    out = _stop(ing, grace=DEADLINE)
    assert ing.returncode == 0, out
    df = _rows(store)
    assert len(df) == n and df["seq"].nunique() == n, "lost or duplicated scores"
    assert sorted(df["seq"] & 0xFFFFFFFF) == list(range(n))
    assert np.allclose(np.sort(df["score"].to_numpy()), 0.1 + np.arange(n) / 1e4, rtol=1e-6)
    assert "scores logged" in out


def test_a_device_credential_cannot_write_into_another_site(mq, tmp_path):
    b, _ = mq
    store = _store(tmp_path / "sites")
    with ingest_thread(b, store) as ing:
        intruder = _publisher(b, "pump-4", "dev-x")
        now = time.time()
        # the broker's ACL drops a publish on another site's topic (pump-4's credential, pump-3's topic) ...
        intruder.publish(tm.topic("pump-3", "dev-x", tm.KIND_PATCH), tm.patch("pump-3", 0, now, 9.0, True))
        # ... and the ingest refuses a message naming another site than its topic's
        intruder.publish(tm.topic("pump-4", "dev-x", tm.KIND_PATCH), tm.patch("pump-3", 1, now, 9.0, True))
        # a device id other than its own client id is refused by the ACL too
        intruder.publish(tm.topic("pump-4", "dev-y", tm.KIND_PATCH), tm.patch("pump-4", 2, now, 9.0, True))
        intruder.publish(tm.topic("pump-4", "dev-x", tm.KIND_PATCH), tm.patch("pump-4", 3, now, 0.5, False))
        assert intruder.close(10) == 0
        assert _wait(lambda: ing.counts["logged"] >= 1 and ing.counts["rejected_wrong_site"] >= 1)
        time.sleep(0.3)
    assert _rows(store, "pump-3") is None or len(_rows(store, "pump-3")) == 0
    df = _rows(store, "pump-4")
    assert df["seq"].tolist() == [3] and df["device"].tolist() == ["dev-x"]
    assert ing.counts["rejected_wrong_site"] == 1 and ing.counts["received"] == 2
    with pytest.raises(BrokerError, match="refused"):
        Publisher(broker(b.url, env={"HUMWATCH_MQTT_USER": "pump-3", "HUMWATCH_MQTT_PASSWORD": "wrong"}),
                  "dev-a").wait_connected(3)


def test_bad_messages_are_counted_and_logged_never_fatal(mq, tmp_path):
    b, d = mq
    store = _store(tmp_path / "sites")
    said = []
    with ingest_thread(b, store) as ing:
        ing.say = said.append
        ghost = _publisher(b, "ghost", "g1")  # a credential whose site does not exist in the store
        ghost.publish(tm.topic("ghost", "g1", tm.KIND_PATCH), tm.patch("ghost", 0, time.time(), 0.5, False))
        dev = _publisher(b, "pump-3", "dev-b")
        t = tm.topic("pump-3", "dev-b", tm.KIND_PATCH)
        dev.publish(t, b"\x00garbage")
        dev.publish(t, tm.patch("pump-3", 1, time.time() + 86400, 0.5, False))  # a day ahead
        dev.publish(t, tm.patch("pump-3", 2, 1e9, 0.5, False))  # 2001
        dev.publish(tm.topic("pump-3", "dev-b", "b"), b'{"v":1,"threshold":"high"}')
        dev.publish(t, tm.patch("pump-3", 3, time.time(), 0.5, False))  # still logged after all that
        for p in (ghost, dev):
            assert p.close(10) == 0
        assert _wait(lambda: ing.counts["logged"] == 1 and ing.counts["received"] == 6)
    c = ing.counts
    assert (c["rejected_unknown_site"], c["rejected_malformed"], c["rejected_implausible_time"]) == (1, 2, 2)
    assert any("unknown_site" in s for s in said) and any("implausible_time" in s for s in said)
    assert _rows(store)["seq"].tolist() == [3]


def test_scores_only_device_gets_the_site_rule_gaps_and_int8_threshold(mq, tmp_path):
    """A device that sends scores only: the ingest applies the site's rule (3 of 5) with the site's threshold, or
    with the threshold of the device's birth message (an int8 firmware); a 2-minute silence is a gap in the log and
    in the site's report data."""
    from calibration.report.data import devices

    b, _ = mq
    store = _store(tmp_path / "sites")
    with ingest_thread(b, store, silence_s=30) as ing:
        dev = _publisher(b, "pump-3", "dev-c")
        t = tm.topic("pump-3", "dev-c", tm.KIND_PATCH)
        t0 = time.time() - 600
        scores = [0.5] * 10 + [2.0, 0.5, 2.0, 2.0] + [0.5] * 6  # over at 10, 12, 13: the 3-of-5 onset is at 13
        for i, s in enumerate(scores):
            dev.publish(t, tm.patch("pump-3", i, t0 + i + (120 if i >= 15 else 0), s, s > THRESHOLD))
        int8 = _publisher(b, "pump-3", "dev-q")
        tq = tm.topic("pump-3", "dev-q", tm.KIND_PATCH)
        int8.publish(tm.topic("pump-3", "dev-q", "b"), tm.Birth(10.0, "int8", "m0").to_json(), retain=True)
        for i in range(6):  # 2.0 is over the site's threshold but not over the device's own (10.0)
            int8.publish(tq, tm.patch("pump-3", i, t0 + i, 2.0, False, int8=True))
        for p in (dev, int8):
            assert p.close(10) == 0
        assert _wait(lambda: ing.counts["logged"] == 26)
    path = store.site("pump-3").dir / "scores.sqlite"
    al = read_alarms(path)
    assert len(al) == 1 and al["info"][0]["device"] == "dev-c" and al["info"][0]["source"] == "ingest"
    assert al["t_utc"][0] == pytest.approx(t0 + 13, abs=1e-3)
    gaps = read_gaps(path)
    assert len(gaps) == 1 and gaps["t_start"][0] == pytest.approx(t0 + 14, abs=1e-3)
    assert gaps["minutes"][0] == pytest.approx(121 / 60, abs=1e-3)
    df = read_scores(path)
    assert sorted(df.loc[df.device == "dev-q", "threshold"].unique()) == [10.0]
    table, g = devices(df, path, now=time.time())
    assert set(table["device"]) == {"dev-c", "dev-q"} and len(g) == 1
    assert (table["silent_s"] > 0).all()  # their last patches are ~8 minutes old


def test_ingest_resumes_the_rule_after_a_restart_without_realarming(mq, tmp_path):
    b, _ = mq
    store = _store(tmp_path / "sites")
    t0 = time.time() - 300
    for part in (range(0, 8), range(0, 12)):  # the second run re-sends 0..7 (as after a device restart) and more
        with ingest_thread(b, store, client_id="ingest-resume") as ing:
            dev = _publisher(b, "pump-3", "dev-d")
            for i in part:
                dev.publish(tm.topic("pump-3", "dev-d", tm.KIND_PATCH), tm.patch("pump-3", i, t0 + i, 2.0, True))
            assert dev.close(10) == 0
            assert _wait(lambda ing=ing, part=part: ing.counts["logged"] + ing.counts["duplicates"] == len(part))
    path = store.site("pump-3").dir / "scores.sqlite"
    assert len(read_scores(path)) == 12
    assert len(read_alarms(path)) == 1  # the onset at patch 2; the resumed rule state does not alarm again


def test_publisher_buffer_is_bounded_says_when_it_drops_and_sends_the_rest(tmp_path):
    """The broker is not there yet: the first `buffer` messages wait in memory, the rest are dropped, counted and
    reported once; when the broker appears the buffered ones are delivered (acknowledged) and it says so."""
    b = Broker(tmp_path / "late", users={"pump-3": "pw-3"})  # configured, not started
    said: list[str] = []
    pub = Publisher(broker(b.url, env=b.env("pump-3")), "dev-b", buffer=20, say=said.append)
    t0 = time.time() - 100
    sent = [pub.publish(tm.topic("pump-3", "dev-b", tm.KIND_PATCH), tm.patch("pump-3", i, t0 + i, 0.5, False))
            for i in range(30)]
    try:
        assert sent == [True] * 20 + [False] * 10 and pub.dropped == 10 and pub.sent == 20
        assert len(said) == 1 and "buffer of 20 messages is full" in said[0] and "dropping" in said[0]
        b.start()
        assert pub.connected.wait(20), "the device did not connect when the broker came"
        assert _wait(lambda: pub.acked == 20), pub.acked
        assert pub.publish(tm.topic("pump-3", "dev-b", tm.KIND_PATCH), tm.patch("pump-3", 30, t0 + 30, 0.5, False))
        assert "publishing again; 10 message(s) dropped so far" in said[-1]
        assert pub.close(wait=10) == 0 and pub.acked == 21
    finally:
        pub.close(wait=0)
        b.stop(kill=True)


def test_tls_broker_with_a_ca(tmp_path):
    try:
        b = Broker(tmp_path / "tls", users={"pump-3": "pw-3"}, tls=True).start()
    except (subprocess.CalledProcessError, RuntimeError, TypeError) as e:
        pytest.skip(f"cannot make a test CA or start a TLS broker: {e}")
    try:
        store = _store(tmp_path / "sites")
        assert b.url.startswith("mqtts://")
        with ingest_thread(b, store) as ing:
            dev = _publisher(b, "pump-3", "dev-t")
            dev.publish(tm.topic("pump-3", "dev-t", tm.KIND_PATCH), tm.patch("pump-3", 0, time.time(), 0.5, False))
            assert dev.close(10) == 0
            assert _wait(lambda: ing.counts["logged"] == 1)
        no_ca = {k: v for k, v in b.env("pump-3").items() if k != "HUMWATCH_MQTT_CA"}
        with pytest.raises(BrokerError):  # the system's CAs do not know the test CA: no connection
            Publisher(broker(b.url, env=no_ca), "dev-t").wait_connected(3)
    finally:
        b.stop(kill=True)


def test_cli_refuses_credentials_on_the_command_line_and_a_bad_url(tmp_path):
    from helpers import assert_one_error_line, invoke

    r = invoke("ingest", "--broker", "mqtt://u:pw@127.0.0.1:1", "--sites-dir", tmp_path)
    assert_one_error_line(r, "not in the URL")
    r = invoke("ingest", "--broker", "http://127.0.0.1:1", "--sites-dir", tmp_path)
    assert_one_error_line(r, "mqtt://HOST:PORT")


@pytest.fixture(scope="module")
def real_site(tmp_path_factory):
    """A calibrated site with a small trained model (as tests/test_monitor.py makes one)."""
    import torch

    from anomaly.modeldir import model_hash
    from anomaly.simulate import SimConfig, write_audio
    from calibration.calibrate import CalibrationRequest, calibrate

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("pubsite")
    model = small_model(d, recordings=2, seconds=40.0, epochs=1, samples_per_epoch=256)
    store = SiteStore(d / "sites")
    s = store.create(SiteConfig(name="pump-3", model_path=str(model), model_hash=model_hash(model)))
    calibrate(s, CalibrationRequest(files=[write_audio(d / "cal.flac", SimConfig("pump", "none", 0, "factory",
                                                                                  seed=310), 3.0)], force=True))
    audio = d / "audio"
    write_audio(audio / "a.flac", SimConfig("pump", "none", 0, "factory", seed=311), 0.5)
    write_audio(audio / "b.flac", SimConfig("pump", "cavitation", 0.8, "factory", seed=312), 0.5)
    return s, d


def test_monitor_publish_reaches_the_central_log(mq, ingest_process, real_site, tmp_path):
    """`humwatch monitor --publish` on a site; `humwatch ingest` into a central copy of the site store logs the same
    scores and the same alarms (the monitor applies the rule, the ingest logs its alarm messages)."""
    import shutil

    b, _ = mq
    s, d = real_site
    central = SiteStore(tmp_path / "central")
    shutil.copytree(s.dir, central.root / s.name, ignore=shutil.ignore_patterns("scores.sqlite*", "alarms.jsonl"))
    ing = ingest_process(["--sites-dir", central.root, "--client-id", "ing-pub", "--stats", tmp_path / "stats.json"])
    _ingest_connected(ing, tmp_path / "stats.json")  # a patch published before it subscribed would never reach it
    r = subprocess.run([str(HUMWATCH), "monitor", "--site", s.name, "--from", str(d / "audio"), "--start-time",
                        "2026-11-01T00:00:00Z", "--publish", b.url, "--device-id", "edge-1",
                        "--sites-dir", str(s.dir.parent)], env={**os.environ, **b.env("pump-3"),
                                                              "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "acknowledged" in r.stdout and "not acknowledged" not in r.stdout
    local = read_scores(s.dir / "scores.sqlite")
    _wait(lambda: (df := _rows(central)) is not None and len(df) == len(local) or ing.poll() is not None, DEADLINE)
    out = _stop(ing)
    assert ing.returncode == 0, out
    df = _rows(central)
    assert df is not None and len(df) == len(local), out
    df = df.sort_values("t_utc")
    assert np.allclose(df["score"].to_numpy(), local["score"].to_numpy(), rtol=1e-6)
    assert (df["over"].to_numpy() == local["over"].to_numpy()).all() and set(df["device"]) == {"edge-1"}
    assert df["threshold"].iloc[0] == pytest.approx(local["threshold"].iloc[0])  # from the monitor's birth message
    local_alarms = read_alarms(s.dir / "scores.sqlite")
    central_alarms = read_alarms(central.site(s.name).dir / "scores.sqlite")
    assert len(local_alarms) >= 1 and len(central_alarms) == len(local_alarms)
    assert np.allclose(central_alarms["t_utc"], local_alarms["t_utc"], atol=1e-3)
    from calibration.report import build_report

    page = build_report(central.site(s.name))  # the site report of ingested scores: a Devices section
    assert "device-table" in page and "edge-1" in page and "gap-table" in page


def test_partitioned_ingests_split_the_sites(mq, tmp_path):
    from calibration.fleet.ingest import partition_of

    b, _ = mq
    store = _store(tmp_path / "sites")
    n = 2
    parts = {s: partition_of(s, n) for s in ("pump-3", "pump-4")}
    k = parts["pump-3"]
    with ingest_thread(b, store, partition=(k, n)) as ing:
        assert ing.topics() == [tm.subscription(s) for s in sorted(parts) if parts[s] == k]
        for site in ("pump-3", "pump-4"):
            dev = _publisher(b, site, "dev-p")
            dev.publish(tm.topic(site, "dev-p", tm.KIND_PATCH), tm.patch(site, 0, time.time(), 0.5, False))
            assert dev.close(10) == 0
        assert _wait(lambda: ing.counts["logged"] >= 1)
        time.sleep(0.5)
    assert ing.counts["logged"] == sum(1 for s in parts if parts[s] == k)
    assert _rows(store, "pump-3") is not None and len(_rows(store, "pump-3")) == 1


def test_ingest_applies_a_windowed_mean_rule_and_resumes_it(mq, tmp_path):
    """A site calibrated for the windowed-mean rule (issue #14): the ingest raises the alarm at the patch where
    the rule object does, and after a restart it warms the rule with a whole window of logged scores (no second
    onset for the same excursion)."""
    import numpy as np

    from anomaly.decision import WindowMean

    b, _ = mq
    rule = WindowMean(80, 2).with_calibration(0.0, 1.0, 1.5)  # longer than an m-of-n window can be (60)
    store = SiteStore(tmp_path / "sites")
    s = store.create(SiteConfig(name="pump-3", model_path="model", model_hash="m0"))
    base = valid_record(THRESHOLD, model={**valid_record()["model"], "hash": "m0"})
    s.add_calibration({**base, "threshold": {**base["threshold"], "alarm_m": 0, "alarm_n": 80,
                                             "rule": rule.to_dict()}})
    scores = np.exp(np.r_[np.zeros(90), np.full(110, 3.0)])  # the window mean passes 1.5 at patch 90 + 40
    assert rule.onsets(scores).tolist() == [130]
    t0 = time.time() - 300
    for part in (range(0, 135), range(130, 200)):  # a restart while the alarm holds; 130..134 re-sent
        with ingest_thread(b, store, client_id="ingest-mean") as ing:
            dev = _publisher(b, "pump-3", "dev-m")
            for i in part:
                dev.publish(tm.topic("pump-3", "dev-m", tm.KIND_PATCH),
                            tm.patch("pump-3", i, t0 + i, float(scores[i]), bool(scores[i] > THRESHOLD)))
            assert dev.close(10) == 0
            assert _wait(lambda ing=ing, part=part: ing.counts["logged"] + ing.counts["duplicates"] == len(part))
    al = read_alarms(store.site("pump-3").dir / "scores.sqlite")
    assert len(al) == 1 and al["t_utc"][0] == pytest.approx(t0 + 130, abs=1e-3)
