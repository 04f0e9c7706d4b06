"""Fleet benchmark: message bytes, ingest throughput on loopback, bytes stored per device per day, and a fleet
recalibration with Ray against one site at a time.

    python bench/fleet.py [--devices 500] [--sites 50] [--rates 1,10,20] [--seconds 30] [--recal-sites 100]

1. Message size: the binary telemetry message (calibration/fleet/telemetry.py) against the same patch as compact
   JSON, and the MQTT bytes on the wire (fixed header, topic, packet id).
2. Ingest: a Mosquitto broker on a loopback port (tests/mosquitto.py: passwords and the per-site ACL), one
   `humwatch ingest` process, and --devices simulated devices (one MQTT connection each, user = site, client id =
   device, spread over --sites sites) publishing at each rate in --rates scores per second per device for --seconds.
   The devices run in one load-generator process driving all connections from one thread (paho's external-loop API).
   Achieved throughput = scores logged / time from the phase's start until the ingest has logged everything
   published (so a backlog counts against it). The machine's load average is recorded: it is shared.
3. Storage: the sites' score logs' bytes per logged row, per device per day at 1 score/s and at one score per 0.96 s
   patch.
4. Recalibration: --recal-sites sites sharing one small model (1 training epoch on 80 s of simulated pump), each with a
   --recal-minutes recording of its own (simulated pump, seed per site); calibrated once, then recalibrated with
   Ray (2 CPUs) and one site at a time (--workers 0 path), wall time of each.

Seeds: simulator seeds 1000 + site index (recordings), 900-901 (training). Results: bench/results/fleet.json.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (sets OMP_WAIT_POLICY and sys.path)

from anomaly.errors import HumwatchError
from calibration.fleet import telemetry as tm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
RESULTS = ROOT / "bench" / "results"


def message_sizes() -> dict:
    m = tm.decode(tm.patch("pump-3", 123456, 1_790_000_000.96, 0.01234567, False, boot=3))
    m4 = tm.decode(tm.patch("pump-3", 123456, 1_790_000_000.96, 0.01234567, False, boot=3,
                            classes=[0.02, 0.91, 0.05, 0.02]))
    topic = tm.topic("pump-3", "pump-3-mcu-0001", tm.KIND_PATCH)
    wire = lambda payload: 2 + 2 + len(topic) + 2 + len(payload)  # noqa: E731  fixed header, topic, packet id
    return {"binary_patch": len(tm.encode(m)), "json_patch": len(tm.json_patch(m)),
            "binary_patch_4_classes": len(tm.encode(m4)), "json_patch_4_classes": len(tm.json_patch(m4)),
            "binary_alarm": len(tm.alarm("pump-3", 1, 1_790_000_000.0, 3.2, 2.5)), "topic": topic,
            "mqtt_publish_bytes_binary": wire(tm.encode(m)), "mqtt_publish_bytes_json": wire(tm.json_patch(m)),
            "puback_bytes": 4}


# -- load generator (a subprocess: one thread drives every device connection) ------------------------------------
def load_generator(url: str, devices: list[tuple[str, str, str]], rate: float, seconds: float, out: str,
                   boot: int) -> None:
    """``devices``: (site, device, password). Publishes ``rate`` patches/s per device for ``seconds``; writes
    {"published", "acked", "connect_s"} to ``out``."""
    import paho.mqtt.client as paho

    from calibration.fleet.mqtt import broker

    clients, acked = [], [0]
    for site, dev, pw in devices:
        b = broker(url, env={"HUMWATCH_MQTT_USER": site, "HUMWATCH_MQTT_PASSWORD": pw})
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=dev, protocol=paho.MQTTv311)
        c.username_pw_set(b.username, b.password)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.on_publish = lambda *a: acked.__setitem__(0, acked[0] + 1)
        c.connect(b.host, b.port, keepalive=60)
        clients.append((c, site, dev))
    t0 = time.monotonic()
    while any(not c.is_connected() for c, _, _ in clients) and time.monotonic() - t0 < 60:
        _pump([c for c, _, _ in clients], 0.01)
    connect_s = time.monotonic() - t0
    start = time.monotonic()
    now0 = time.time()  # the publishing phase starts (the bench measures throughput from here)
    period = 1.0 / rate if rate else 1.0
    n = len(clients)
    sent, seq = 0, 0
    while True:
        el = time.monotonic() - start
        if (el >= seconds) if rate else (seq >= seconds):
            break
        due = int(el / period) + 1 if rate else seq + 1  # patches each device should have sent by now
        while seq < due:
            for c, site, dev in clients:
                c.publish(tm.topic(site, dev, tm.KIND_PATCH),
                          tm.patch(site, seq, now0 + seq * period, 0.5, False, boot=boot), qos=1)
                sent += 1
            seq += 1
        _pump([c for c, _, _ in clients], min(period / 4, 0.05) if rate else 0)
    end = time.monotonic() + 60
    while acked[0] < sent and time.monotonic() < end:
        _pump([c for c, _, _ in clients], 0.02)
    for c, _, _ in clients:
        c.disconnect()
    Path(out).write_text(json.dumps({"published": sent, "acked": acked[0], "connect_s": connect_s, "start_utc": now0,
                                     "devices": n, "rate": rate, "seconds": seconds}))


def _pump(clients, timeout: float) -> None:
    """One round of paho's external loop over many clients: read what is readable, write what is pending."""
    socks = {c.socket(): c for c in clients if c.socket() is not None}
    want_w = [s for s, c in socks.items() if c.want_write()]
    r, w, _ = select.select(list(socks), want_w, [], timeout)
    for s in r:
        socks[s].loop_read(100)
    for s in w:
        socks[s].loop_write()
    for c in clients:
        c.loop_misc()


def _count(store_root: Path, sites: list[str]) -> int:
    from calibration.monitoring.scorelog import connect

    n = 0
    for s in sites:
        p = store_root / s / "scores.sqlite"
        if p.exists():
            try:
                con = connect(p, readonly=True)
                n += con.execute("SELECT count(*) FROM scores").fetchone()[0]
                con.close()
            except (sqlite3.Error, HumwatchError):
                pass  # being created by the ingest right now
    return n


def ingest_bench(devices: int, n_sites: int, rates: list[float], seconds: float, work: Path,
                 drain_per_device: int = 0) -> dict:
    from helpers import valid_record  # a complete calibration record (the store refuses partial ones)
    from mosquitto import MISSING, Broker

    from calibration.store import SiteConfig, SiteStore

    if MISSING:
        return {"skipped": MISSING}
    sites = [f"site-{i:03d}" for i in range(n_sites)]
    store = SiteStore(work / "sites")
    for s in sites:
        site = store.create(SiteConfig(name=s, model_path="m", model_hash="h"))
        site.add_calibration(valid_record(1.0, site=s, model={**valid_record()["model"], "hash": "h"}))
    b = Broker(work / "broker", users={s: f"pw-{s}" for s in sites}).start()
    env = {**os.environ, **b.env("ingest"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "humwatch_cli", "ingest", "--broker", b.url, "--sites-dir", str(store.root),
           "--silence", "3600"]
    ing = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    time.sleep(3)
    devs = [(sites[i % n_sites], f"dev-{i:04d}", f"pw-{sites[i % n_sites]}") for i in range(devices)]
    phases = []
    total_before = 0
    try:
        for phase, rate in enumerate(rates, 1):
            out = work / f"gen-{rate}.json"
            load0 = os.getloadavg()
            gen = subprocess.Popen([sys.executable, __file__, "--generator", b.url, json.dumps(devs), str(rate),
                                    str(seconds), str(out), str(phase)], cwd=ROOT / "bench", env={**os.environ,
                                                                                    "PYTHONPATH": str(ROOT)})
            gen.wait()
            g = json.loads(out.read_text())
            gen_done = time.monotonic()
            target = total_before + g["acked"]
            while _count(store.root, sites) < target and time.monotonic() - gen_done < 120:
                time.sleep(0.2)
            logged = _count(store.root, sites) - total_before
            drained, drained_utc = time.monotonic(), time.time()
            total_before += logged
            wall = drained_utc - g["start_utc"]  # from the first publish until everything is logged
            phases.append({"rate_per_device": rate, "devices": devices, "offered_per_s": devices * rate,
                           "published": g["published"], "acked": g["acked"], "logged": logged,
                           "publish_seconds": seconds, "seconds_to_drain_after_publishing": round(drained - gen_done,
                                                                                                   2),
                           "achieved_per_s": round(logged / wall, 1), "load_avg_before": load0,
                           "load_avg_after": os.getloadavg()})
            print(f"  {devices} devices × {rate:g}/s: published {g['published']}, logged {logged}, "
                  f"{logged / wall:,.0f} scores/s (drained {drained - gen_done:.1f} s after), load {os.getloadavg()}")
        drain = None
        if drain_per_device:
            drain = _drain_phase(ing, cmd, env, b, devs, drain_per_device, len(rates) + 1, store.root, sites,
                                 total_before, work)
            ing = drain.pop("process")
    finally:
        ing.send_signal(signal.SIGTERM)
        ing.wait(30)
        b.stop()
    files = [p for s in sites for p in (store.root / s).glob("scores.sqlite*")]
    size = sum(p.stat().st_size for p in files)
    rows = _count(store.root, sites)
    per_row = size / rows
    return {"phases": phases, "drain": drain, "stored_bytes": size, "stored_rows": rows,
            "bytes_per_row": round(per_row, 1),
            "bytes_per_device_day_at_1_per_s": round(per_row * 86400),
            "bytes_per_device_day_at_0.96_s": round(per_row * 86400 / 0.96)}


def _drain_phase(ing, cmd, env, b, devs, per_device: int, boot: int, root: Path, sites: list[str], before: int,
                 work: Path) -> dict:
    """Capacity without the load generator in the way: with the ingest stopped, the devices publish a backlog the
    broker queues for the ingest's session; then the ingest starts and drains it. Rate = rows / time from its first
    logged row to the last."""
    ing.send_signal(signal.SIGTERM)
    ing.wait(30)
    out = work / "gen-drain.json"
    subprocess.run([sys.executable, __file__, "--generator", b.url, json.dumps(devs), "0", str(per_device), str(out),
                    str(boot)], cwd=ROOT / "bench", env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    g = json.loads(out.read_text())
    load0 = os.getloadavg()
    ing = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    target = before + g["acked"]
    t_first = n_first = None
    end = time.monotonic() + 600
    while time.monotonic() < end:
        n = _count(root, sites)
        if t_first is None and n > before:
            t_first, n_first = time.monotonic(), n
        if n >= target:
            break
        time.sleep(0.25)
    t_last = time.monotonic()
    logged = n - before
    rate = (n - n_first) / (t_last - t_first) if t_first and t_last > t_first else None
    print(f"  backlog of {g['acked']} scores drained: {logged} logged at {rate:,.0f} scores/s, load {os.getloadavg()}")
    return {"backlog": g["acked"], "logged": logged, "drain_seconds": round(t_last - (t_first or t_last), 2),
            "achieved_per_s": round(rate, 1) if rate else None, "load_avg_before": load0,
            "load_avg_after": os.getloadavg(), "process": ing}


def storage_one_device_day(work: Path) -> dict:
    """One device's day at 1 score/s through the ingest's writer (ScoreLog.append_device, commits of 500 rows),
    the log closed (WAL checkpointed): bytes on disk per row and per day. Also a locally monitored day (with the
    64-band errors) for comparison."""
    import numpy as np

    from calibration.monitoring.scorelog import ScoreLog

    out = {}
    for kind in ("device", "monitor"):
        path = work / f"day-{kind}.sqlite"
        log = ScoreLog(path)
        run = log.start_run("cal", "h", 1.0, 3, 5, kind)
        rng = np.random.default_rng(0)
        t0, n = 1_790_000_000.0, 86_400
        for i in range(0, n, 500):
            k = np.arange(i, min(n, i + 500))
            sc = rng.gamma(2, 0.1, k.size)
            if kind == "device":
                log.append_device(run, "dev-1", (1 << 32) | k, t0 + k, sc)
            else:
                log.append(run, t0 + k * 0.96, sc, rng.random((k.size, 64)), "/rec/day.flac", k * 0.96)
            log.maybe_commit(force=True)
        log.close()
        size = sum(p.stat().st_size for p in work.glob(f"day-{kind}.sqlite*"))
        out[kind] = {"rows": n, "bytes": size, "bytes_per_row": round(size / n, 1)}
    print(f"  one device-day: {out['device']['bytes'] / 1e6:.2f} MB ({out['device']['bytes_per_row']} B/row); a "
          f"locally monitored day with band errors: {out['monitor']['bytes'] / 1e6:.1f} MB")
    return out


# -- recalibration with Ray vs serial ---------------------------------------------------------------------------------
def recal_bench(n_sites: int, minutes: float, work: Path) -> dict:
    import torch

    from anomaly.detectors import fingerprint_files, fit_detector
    from anomaly.features import DEFAULT_PARAMS, log_mel
    from anomaly.modeldir import model_hash
    from anomaly.simulate import SimConfig, simulate, write_audio
    from anomaly.train import TrainConfig
    from calibration.fleet.jobs import JobOptions, run_job
    from calibration.store import SiteConfig, SiteStore

    torch.set_num_threads(1)
    t = time.perf_counter()
    recs = [log_mel(simulate(SimConfig("pump", "none", 0, "factory", seed=900 + i), 40.0), DEFAULT_PARAMS)
            for i in range(2)]
    det = fit_detector("ae", recs, train_config=TrainConfig(threads=1, epochs=1, samples_per_epoch=256))
    model = det.save(work / "model", extra={"training_data": fingerprint_files([])})
    store = SiteStore(work / "recal-sites")
    names = []
    for i in range(n_sites):
        src = work / "audio" / f"s{i:03d}"
        write_audio(src / "normal.flac", SimConfig("pump", "none", 0, "factory", seed=1000 + i), minutes)
        names.append(store.create(SiteConfig(name=f"s{i:03d}", model_path=str(model), model_hash=model_hash(model),
                                             source=str(src))).name)
    setup_s = time.perf_counter() - t
    opts = JobOptions(force=True, accept_shift=True)
    out = {"sites": n_sites, "minutes_per_site": minutes, "setup_seconds": round(setup_s, 1)}
    t = time.perf_counter()
    res = run_job("calibrate", store, names, opts, workers=2, restart=True)
    out["calibrate_ray_s"] = round(time.perf_counter() - t, 1)
    out["calibrate_failed"] = sum(r.status == "failed" for r in res)
    out["calibrate_failures"] = sorted({r.message for r in res if r.status == "failed"})[:3]
    import ray

    t = time.perf_counter()
    res = run_job("recalibrate", store, names, opts, workers=2, restart=True)
    out["recalibrate_ray_s"] = round(time.perf_counter() - t, 1)
    out["recalibrate_ray_failed"] = sum(r.status == "failed" for r in res)
    out["recalibrate_failures"] = sorted({r.message for r in res if r.status == "failed"})[:3]
    ray.shutdown()
    t = time.perf_counter()
    res = run_job("recalibrate", store, names, opts, workers=0, restart=True)
    out["recalibrate_serial_s"] = round(time.perf_counter() - t, 1)
    out["recalibrate_serial_failed"] = sum(r.status == "failed" for r in res)
    t = time.perf_counter()
    import ray as ray2

    ray2.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    out["ray_init_s"] = round(time.perf_counter() - t, 1)
    ray2.shutdown()

    out["speedup"] = round(out["recalibrate_serial_s"] / max(out["recalibrate_ray_s"], 1e-9), 2)
    out["load_avg"] = os.getloadavg()
    print(f"  {n_sites} sites × {minutes:g} min: Ray {out['recalibrate_ray_s']} s, one at a time "
          f"{out['recalibrate_serial_s']} s (×{out['speedup']}); Ray start-up {out['ray_init_s']} s")
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--generator":
        url, devs, rate, seconds, out, boot = sys.argv[2:8]
        load_generator(url, [tuple(d) for d in json.loads(devs)], float(rate), float(seconds), out, int(boot))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--sites", type=int, default=50)
    ap.add_argument("--rates", default="1,10,20")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--drain-per-device", type=int, default=200, help="backlog per device for the drain phase")
    ap.add_argument("--recal-sites", type=int, default=100)
    ap.add_argument("--recal-minutes", type=float, default=3.0)
    ap.add_argument("--skip", default="", help="comma-separated: ingest, recal")
    ap.add_argument("--out", type=Path, default=RESULTS / "fleet.json")
    a = ap.parse_args()
    res = {"machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}, "messages": message_sizes()}
    print("message bytes:", res["messages"])
    with tempfile.TemporaryDirectory(prefix="humwatch-fleet-bench-") as d:
        res["storage_one_device_day"] = storage_one_device_day(Path(d))
        if "ingest" not in a.skip:
            res["ingest"] = ingest_bench(a.devices, a.sites, [float(x) for x in a.rates.split(",") if x],
                                         a.seconds, Path(d), a.drain_per_device)
            print("storage:", {k: v for k, v in res["ingest"].items() if k != "phases"})
        if "recal" not in a.skip:
            res["recalibration"] = recal_bench(a.recal_sites, a.recal_minutes, Path(d))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(a.out.read_text()) if a.out.exists() else {}
    a.out.write_text(json.dumps({**old, **res}, indent=2) + "\n")  # a partial run (--skip) keeps the other parts
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
