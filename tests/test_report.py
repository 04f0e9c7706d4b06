"""``humwatch report``: the HTML page (rendered in headless Chromium), the log exports and bad input.

One tiny site is built per module: a 1-epoch model, 3 min of calibration audio, then 60 s of normal audio and 30 s
of cavitation monitored from 2026-11-20 08:00 UTC. The cavitation file's name and the site's machine and microphone
texts carry HTML that must come out escaped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import assert_one_error_line, invoke

from anomaly.simulate import SimConfig, write_audio
from calibration import report as rp
from calibration.store import SiteStore

FAST = ("--epochs", "1", "--samples-per-epoch", "128", "--threads", "1")
MACHINE = 'pump <script>alert("m")</script> & co'
MIC = "<img src=x onerror=alert(2)>"
CAV_NAME = "02 cav <script>alert(3)<b>.flac"  # no '/' possible in a file name, so no closing tag
START = "2026-11-20T08:00:00Z"








@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A monitored site: returns (root, sites dir, report path)."""
    root = tmp_path_factory.mktemp("report")
    for i in range(2):
        write_audio(root / "train" / f"normal_{i}.flac", SimConfig("pump", "none", 0.0, "factory", 10 + i), 20 / 60)
    write_audio(root / "calib.flac", SimConfig("pump", "none", 0.0, "factory", 20), 3.0)
    write_audio(root / "mon" / "01_normal.flac", SimConfig("pump", "none", 0.0, "factory", 30), 1.0)
    write_audio(root / "mon" / CAV_NAME, SimConfig("pump", "cavitation", 0.8, "factory", 31), 0.5)
    sites = root / "sites"
    r = invoke("train", "--normal", root / "train", "--out", root / "model", *FAST)
    assert r.exit_code == 0, r.output
    # 3 min of calibration and 30 s of fault: the m-of-n rule (the windowed mean needs minutes to fill)
    r = invoke("site", "create", "pump-1", "--model", root / "model", "--machine", MACHINE, "--microphone", MIC,
               "--alarm", "3/5", "--sites-dir", sites)
    assert r.exit_code == 0, r.output
    r = invoke("calibrate", "--site", "pump-1", "--from", root / "calib.flac", "--force", "--sites-dir", sites)
    assert r.exit_code == 0, r.output
    r = invoke("monitor", "--site", "pump-1", "--from", root / "mon", "--start-time", START, "--sites-dir", sites)
    assert r.exit_code == 0, r.output
    out = root / "report.html"
    r = invoke("report", "--site", "pump-1", "--out", out, "--sites-dir", sites)
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output
    return root, sites, out


@pytest.fixture(scope="module")
def html(demo) -> str:
    return demo[2].read_text()


def site(demo):
    return SiteStore(demo[1]).site("pump-1")


# --------------------------------------------------------------------------------------------------------------------
# The page's content


def test_report_has_every_plot_and_table(html):
    for id_ in ("verdict", "timeline", "histogram", "drift", "alarm-table", "drift-table", "certificate", "history",
                "site-table", "summary"):
        assert f'id="{id_}"' in html, id_
    assert html.index('id="verdict"') < html.index('id="summary"')  # the verdict comes first
    assert len(re.findall(r'<img[^>]+class="patch', html)) == 6
    assert html.count("data:image/png;base64,") == 3 + 6


def test_report_is_self_contained_and_small(demo, html):
    assert "http://" not in html and "https://" not in html
    tags = re.findall(r"<[a-zA-Z][^>]*>", html)  # real tags only: escaped user text holds no '<'
    srcs = [m for t in tags for m in re.findall(r"""\s(?:src|href|srcset|poster|data)\s*=\s*["']?([^"'\s>]*)""", t,
                                                 re.IGNORECASE)]
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs), srcs[:5]
    assert "url(" not in html and "@import" not in html
    assert "default-src 'none'" in html  # the browser may not load anything, nor run any script
    assert demo[2].stat().st_size < 3_000_000


def test_user_strings_are_escaped(html):
    assert "<script" not in html.lower()
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;m&quot;)&lt;/script&gt; &amp; co" in html  # the machine
    assert "&lt;img src=x onerror=alert(2)&gt;" in html  # the microphone
    assert "02 cav &lt;script&gt;alert(3)&lt;b&gt;.flac" in html  # the file name, in alarms and patch captions


def test_cavitation_alarms_and_top_patches_show_high_band_error(html):
    table = html[html.index('id="alarm-table"'):]
    table = table[: table.index("</table>")]
    assert "02 cav &lt;script&gt;" in table  # the cavitation file raised an alarm
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", html, re.S)
    assert len(captions) == 6
    cav = [c for c in captions if "02 cav" in c]
    assert len(cav) >= 2  # the highest scores come from the fault (at most one per 10 s, so not all of them)
    assert "02 cav" in captions[0]
    first_band = re.search(r"bands deviating most: <b>([\d.]+)–([\d.]+) kHz</b>", captions[0])
    assert first_band and float(first_band.group(1)) >= 2.0, captions[0]
    assert "high band" in captions[0]


def test_top_patches_are_spread_out(demo):
    df, _ = rp.read_log(site(demo))
    top = rp.top_patches(df, 6)
    t = np.sort(top["t_utc"].to_numpy())
    assert len(t) == 6 and np.diff(t).min() > rp.PATCH_SPACING_S
    assert top["score"].iloc[0] == df["score"].max()


def test_missing_source_file_shows_logged_bands_only(demo):
    root, _, _ = demo
    src, aside = root / "mon" / CAV_NAME, root / "aside.flac"
    shutil.move(src, aside)
    try:
        page = rp.build_report(site(demo), top_n=2)
    finally:
        shutil.move(aside, src)
    assert "no longer exists" in page
    assert 'class="patch patch-bands-only"' in page
    assert "bands deviating most: <b>" in page  # from the logged per-band errors


def test_since_limits_the_period(demo):
    s = site(demo)
    full, _ = rp.read_log(s)
    part, _ = rp.read_log(s, rp.parse_since("2026-11-20T08:01:00Z"))
    assert 0 < len(part) < len(full)
    assert part["t_utc"].min() >= rp.parse_since("2026-11-20T08:01:00Z")
    with pytest.raises(rp.ReportError, match="no scores since .* the log of 'pump-1' holds"):
        rp.build_report(s, rp.parse_since("2030-01-01"))


# --------------------------------------------------------------------------------------------------------------------
# Rendering in headless Chromium


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    pytest.skip("chromium not installed: apt-get install chromium")


def run_chromium(page: Path, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", *mode,
           page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=tmp_path)


def screenshot(page: Path, tmp_path: Path, width: int, height: int = 2000):
    from PIL import Image

    shot = tmp_path / f"shot-{width}.png"
    r = run_chromium(page, tmp_path, f"--window-size={width},{height}", "--hide-scrollbars", f"--screenshot={shot}")
    assert shot.is_file(), r.stderr[-2000:]
    return np.asarray(Image.open(shot).convert("RGB"), float)


def near(img: np.ndarray, rgb, tol: float = 40) -> np.ndarray:
    return np.sqrt(((img - np.array(rgb, float)) ** 2).sum(axis=2)) < tol


def test_chromium_renders_the_plots(demo, tmp_path):
    page = demo[2]
    img = screenshot(page, tmp_path, 1400)
    assert img.shape[:2] == (2000, 1400)
    gray = img.mean(axis=2)
    assert gray.std() > 20, "the screenshot is blank"
    # The plots drew: the threshold's orange and the score line's blue appear nowhere in the page's text or CSS.
    for name, rgb in (("threshold orange", (255, 127, 14)), ("score blue", (74, 127, 181))):
        assert near(img, rgb).sum() > 1000, f"{name}: a plot did not render"
    # The verdict panel opens the page: its "act" red tint fills a band just under the header.
    top = img[90:300]
    assert near(top, (255, 236, 236), 6).mean() > 0.3, "no verdict panel at the top"

    r = run_chromium(page, tmp_path, "--window-size=1400,2000", "--dump-dom")
    dom = r.stdout
    assert r.returncode == 0 and "</html>" in dom, r.stderr[-2000:]
    for id_ in ("verdict", "timeline", "histogram", "drift", "alarm-table", "certificate", "history"):
        assert f'id="{id_}"' in dom, id_
    assert len(re.findall(r'<img[^>]+class="patch', dom)) == 6
    assert "<script" not in dom.lower()  # the escaped text stayed text
    assert "alert(3)" in dom


def test_chromium_at_phone_width_keeps_everything_inside_the_page(demo, tmp_path):
    """At 390 px every table scrolls inside its card and every image shrinks: nothing reaches the right margin."""
    img = screenshot(demo[2], tmp_path, 390, 6000)
    assert img.shape[1] == 390
    page_bg, header = (246, 247, 249), (31, 59, 87)
    assert img.mean(axis=2).std() > 20, "the screenshot is blank"
    margin = img[:, -3:]  # the page's right margin, beyond every card (the header spans it)
    spill = ~(near(margin, page_bg, 3) | near(margin, header, 3)).all(axis=1)
    assert spill.sum() == 0, f"{spill.sum()} rows draw into the right margin: something is wider than the screen"
    assert near(img[60:400], (255, 236, 236), 6).mean() > 0.2, "no verdict panel at the top"


# --------------------------------------------------------------------------------------------------------------------
# Exports


def test_export_csv_and_parquet(demo, tmp_path):
    _, sites, _ = demo
    n = len(rp.read_log(site(demo))[0])
    r = invoke("report", "--site", "pump-1", "--out", tmp_path / "log.csv", "--sites-dir", sites)
    assert r.exit_code == 0 and f"wrote {n} scores" in r.output, r.output
    csv = pd.read_csv(tmp_path / "log.csv")
    assert len(csv) == n and {"t_utc", "time", "score", "over", "file", "offset_s", "threshold"} <= set(csv.columns)
    assert not any(c.startswith("band_") for c in csv.columns)
    r = invoke("report", "--site", "pump-1", "--out", tmp_path / "log.bin", "--format", "parquet",
               "--since", "2026-11-20T08:01:00Z", "--sites-dir", sites)
    assert r.exit_code == 0, r.output
    pq = pd.read_parquet(tmp_path / "log.bin")
    assert 0 < len(pq) < n and "band_63" in pq.columns and pq["band_00"].notna().all()
    assert not list(tmp_path.glob(".log*"))  # no temp files left behind


# --------------------------------------------------------------------------------------------------------------------
# Bad input


def test_site_name_with_script(demo):
    r = invoke("report", "--site", "<script>alert(1)</script>", "--out", "x.html", "--sites-dir", demo[1])
    assert_one_error_line(r, "invalid site name")


def test_settings_changes_are_listed_with_when_they_take_effect(demo, tmp_path):
    sites = tmp_path / "sites"
    shutil.copytree(demo[1], sites)
    r = invoke("site", "set", "pump-1", "--k", "5", "--microphone", "MEMS <b>x</b>", "--sites-dir", sites)
    assert r.exit_code == 0, r.output
    r = invoke("report", "--site", "pump-1", "--out", tmp_path / "r.html", "--top", "0", "--sites-dir", sites)
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text()
    table = page[page.index('id="settings"'):]
    table = table[: table.index("</table>")]
    assert "<td>k</td><td>4.0</td><td>5.0</td><td>at the next calibration" in table
    assert "MEMS &lt;b&gt;x&lt;/b&gt;" in table and "<b>x</b>" not in table
    assert 'id="settings"' not in demo[2].read_text()  # no changes, no table


def test_uncalibrated_site(demo, tmp_path):
    root, sites, _ = demo
    r = invoke("site", "create", "fresh", "--model", root / "model", "--sites-dir", sites)
    assert r.exit_code == 0, r.output
    r = invoke("report", "--site", "fresh", "--out", tmp_path / "r.html", "--sites-dir", sites)
    assert_one_error_line(r, "not calibrated yet", "humwatch site calibrate fresh")
    assert not (tmp_path / "r.html").exists()


def test_calibrated_site_without_scores(demo, tmp_path):
    _, sites, _ = demo
    src = Path(sites) / "pump-1"
    dst = Path(sites) / "quiet-1"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("scores.sqlite*", "alarms.jsonl"))
    toml = dst / "site.toml"
    toml.write_text(toml.read_text().replace('name = "pump-1"', 'name = "quiet-1"'))
    r = invoke("report", "--site", "quiet-1", "--out", tmp_path / "r.html", "--sites-dir", sites)
    assert_one_error_line(r, "no scores logged yet", "humwatch monitor --site quiet-1")


def test_damaged_score_log(demo, tmp_path):
    _, sites, _ = demo
    dst = Path(sites) / "broken-1"
    shutil.copytree(Path(sites) / "pump-1", dst, ignore=shutil.ignore_patterns("scores.sqlite*"))
    toml = dst / "site.toml"
    toml.write_text(toml.read_text().replace('name = "pump-1"', 'name = "broken-1"'))
    (dst / "scores.sqlite").write_bytes(b"not a database" * 100)
    for out in ("r.html", "r.csv"):
        r = invoke("report", "--site", "broken-1", "--out", tmp_path / out, "--sites-dir", sites)
        assert_one_error_line(r, "scores.sqlite: not a humwatch score log", "humwatch site repair broken-1",
                              exit_code=5)


def test_missing_site(demo, tmp_path):
    r = invoke("report", "--site", "nosuch", "--out", tmp_path / "r.html", "--sites-dir", demo[1])
    assert_one_error_line(r, "no site 'nosuch'")


@pytest.mark.parametrize("args, needle", [
    (("--since", "yesterday"), "--since must be like 7d"),
    (("--format", "pdf"), "--format must be one of html, csv, parquet"),
    (("--format", "csv"), "does not match the file name r.html"),
])
def test_bad_options(demo, tmp_path, args, needle):
    r = invoke("report", "--site", "pump-1", "--out", tmp_path / "r.html", *args, "--sites-dir", demo[1])
    assert_one_error_line(r, needle)


# --------------------------------------------------------------------------------------------------------------------
# Units


@pytest.mark.parametrize("text, seconds", [("7d", 7 * 86400), ("12h", 12 * 3600), ("90m", 90 * 60), ("2w", 14 * 86400),
                                           ("1.5h", 5400), (" 3D ", 3 * 86400)])
def test_parse_since_relative(text, seconds):
    assert rp.parse_since(text, now=1_000_000_000.0) == 1_000_000_000.0 - seconds


def test_parse_since_absolute():
    assert rp.parse_since("2026-11-20") == pd.Timestamp("2026-11-20", tz="UTC").timestamp()
    assert rp.parse_since("2026-11-20T08:00:00Z") == pd.Timestamp("2026-11-20 08:00", tz="UTC").timestamp()
    assert rp.parse_since("2026-11-20T09:00:00+01:00") == pd.Timestamp("2026-11-20 08:00", tz="UTC").timestamp()
    assert rp.parse_since(None) is None and rp.parse_since("") is None
    for bad in ("7x", "d7", "last week", "2026-13-01"):
        with pytest.raises(rp.ReportError):
            rp.parse_since(bad)


def test_timeline_downsampling_keeps_peaks_and_gaps():
    rng = np.random.default_rng(0)
    t = np.arange(200_000) * 0.96
    t[100_000:] += 86400.0  # a day without monitoring in the middle
    s = rng.random(t.size)
    s[123_456] = 50.0
    ser = rp.timeline_series(t, s, np.full(t.size, 0.9))
    assert np.isfinite(ser["t"]).sum() <= rp.MAX_POINTS
    assert np.nanmax(ser["max"]) == 50.0
    assert np.isnan(ser["max"]).any()  # the line breaks over the gap
    small = rp.timeline_series(t[:1000], s[:1000], np.full(1000, 0.9))
    assert np.array_equal(small["max"], s[:1000])


def test_band_names():
    from anomaly.features import DEFAULT_PARAMS

    bands = np.ones(64)
    bands[[60, 61, 62]] = [9.0, 10.0, 8.0]
    bands[1] = 7.0
    top = rp.top_bands(bands, np.ones(64), DEFAULT_PARAMS, machine="pump 3")
    assert [d["band"] for d in top] == [61, 60, 62]
    assert top[0]["hint"] == "cavitation-like high band (broadband hiss)"
    groups = rp.band_groups(rp.top_bands(bands, np.ones(64), DEFAULT_PARAMS, k=4, machine="pump"))
    assert len(groups) == 2 and groups[0]["bands"] == 3 and groups[1]["hint"].startswith("low band")
    # an unknown machine type: the band and its frequency only
    top = rp.top_bands(bands, np.ones(64), DEFAULT_PARAMS, machine="ToyCar")
    assert top[0]["hint"] == "high band (above 4.0 kHz)"


def test_relative_source_paths_resolve_from_above_the_site(tmp_path, monkeypatch):
    """The monitor logs paths as given (``demo-out/audio/x.flac`` when run from the directory above ``demo-out``)."""
    (tmp_path / "demo-out" / "audio").mkdir(parents=True)
    audio = tmp_path / "demo-out" / "audio" / "x.flac"
    audio.write_bytes(b"")
    s = SiteStore(tmp_path / "demo-out" / "sites").site("demo-pump")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert rp.resolve_audio("demo-out/audio/x.flac", s) == tmp_path / "demo-out" / "audio" / "x.flac"
    assert rp.resolve_audio(str(audio), s) == audio
    assert rp.resolve_audio("demo-out/audio/gone.flac", s) is None
    assert rp.resolve_audio(None, s) is None


@pytest.mark.slow
def test_a_week_of_scores_gives_a_small_report(demo, tmp_path):
    """630 000 patches (a week) → the page stays under 3 MB."""
    import time

    from calibration.monitoring.scorelog import ScoreLog

    _, sites, _ = demo
    dst = tmp_path / "sites" / "pump-1"
    shutil.copytree(Path(sites) / "pump-1", dst, ignore=shutil.ignore_patterns("scores.sqlite*"))
    s = SiteStore(tmp_path / "sites").site("pump-1")
    cal = s.calibration()
    log = ScoreLog(dst / "scores.sqlite", commit_every=60)
    run = log.start_run(cal["id"], cal["model"]["hash"], cal["threshold"]["threshold"], 3, 5, "test")
    rng = np.random.default_rng(1)
    n = 7 * 90_000
    for a in range(0, n, 90_000):
        sc = rng.lognormal(0, 0.1, 90_000)
        log.append(run, 1.79e9 + (a + np.arange(90_000)) * 0.96, sc, rng.random((90_000, 64)), "/gone.flac",
                   np.arange(90_000) * 0.96)
    log.close()
    t0 = time.perf_counter()
    path = rp.write_report(s, tmp_path / "week.html")
    took = time.perf_counter() - t0
    size = path.stat().st_size
    assert size < 3_000_000, size
    text = path.read_text()
    assert "<th>day</th>" in text and "no longer exists" in text  # daily drift; the source file is gone
    assert took < 120, took


# --------------------------------------------------------------------------------------------------------------------
# Verdict, alarm table, charts


def test_alarm_table_without_a_classifier_has_no_fault_column_and_short_names(html):
    table = html[html.index('id="alarm-table"'):]
    table = table[: table.index("</table>")]
    head = re.findall(r"<th>(.*?)</th>", table)
    assert "likely fault" not in head and "how serious" in head
    assert "strong" in table
    # the file is named, its full path is on hover
    assert re.search(r'<span class="file" title="/[^"]*02 cav &lt;script&gt;alert\(3\)&lt;b&gt;.flac">02 cav', table)


def test_verdict_of_the_demo_says_act_with_the_reason_and_next_step(html):
    v = html[html.index('id="verdict"'):]
    v = v[: v.index("</section>")]
    assert 'data-level="act"' in v and "Act: inspect the machine" in v
    assert "alarm(s)" in v and "× the threshold" in v and "Next step: Inspect the machine" in v
    assert "below the 30 min minimum (forced)" in v  # the 3-min certificate is a reason to watch too


def _facts(alarm_scores=(), over_after=0.0, per_day=0.1, q50=1.0, over=0.0, forced=False, time_source="name",
           audio=None):
    n = 600
    t = 1.8e9 + np.arange(n) * 0.96
    df = pd.DataFrame({"t_utc": t, "score": np.full(n, 1.0), "over": np.zeros(n, int),
                       "time_source": time_source})
    rows = []
    for i, s in enumerate(alarm_scores):
        at = t[100 + 200 * i]
        df.loc[(df["t_utc"] >= at) & (df["t_utc"] < at + 60), "over"] = (
            np.arange(((df["t_utc"] >= at) & (df["t_utc"] < at + 60)).sum()) < over_after * 62.5).astype(int)
        rows.append({"t_utc": at, "score": s, "info": {"threshold": 2.0}})
    alarms = pd.DataFrame(rows, columns=["t_utc", "score", "info"])
    drift = pd.DataFrame({"q50": [1.0, q50], "base_q50": [1.0, 1.0], "over": [0.0, over],
                          "expected_over": [1e-3, 1e-3]})
    current = {"threshold": {"false_alarms_per_day": per_day},
               "audio": audio or {"forced": forced, "minutes": 45, "min_minutes": 30}}
    return rp.data.ReportFacts(df, alarms, current, drift, n * 0.96, "pump")


def test_verdict_levels():
    v = rp.data.verdict(_facts())
    assert v.level == "normal" and v.headline == "All normal" and "keep monitoring" in v.next_step
    v = rp.data.verdict(_facts(alarm_scores=[2.1], over_after=0.1))  # one marginal, brief alarm
    assert v.level == "watch" and "weak" in v.reasons[0].what
    v = rp.data.verdict(_facts(alarm_scores=[6.0], over_after=0.9))
    assert v.level == "act" and "strong" in v.reasons[0].what and "Inspect the machine" in v.next_step
    v = rp.data.verdict(_facts(q50=1.6))
    assert v.level == "watch" and "1.60× the calibration's" in v.reasons[0].what
    v = rp.data.verdict(_facts(over=0.05))
    assert v.level == "watch" and "expected by the certificate" in v.reasons[0].what
    v = rp.data.verdict(_facts(per_day=40.0))
    assert v.level == "watch" and "40 false alarms per day" in v.reasons[0].what and "site set" in v.next_step
    v = rp.data.verdict(_facts(forced=True))
    assert v.level == "watch" and "(forced)" in v.reasons[0].what and "site calibrate" in v.next_step
    v = rp.data.verdict(_facts(audio={"forced": False, "minutes": 12.0, "min_minutes": 10.0}))  # lowered, not forced
    assert v.level == "watch" and "12 min of audio, below the 30 min minimum (--min-minutes 10)" in v.reasons[0].what
    v = rp.data.verdict(_facts(time_source="mtime"))
    assert v.level == "normal" and any("uncertain" in r.what for r in v.reasons)


def test_verdict_watches_a_silent_device():
    """A device that stopped reporting over MQTT leaves the machine unmonitored: watch, naming it."""
    f = _facts()
    f.extra["devices"] = pd.DataFrame({"device": ["esp-1", "esp-2"], "patches": [10, 10],
                                       "first": [1.8e9, 1.8e9], "last": [1.8e9 + 500, 1.8e9 + 500],
                                       "silent_s": [0.0, 7200.0]})
    v = rp.data.verdict(f)
    assert v.level == "watch" and "1 of 2 device(s) silent: esp-2 for 2 h" in v.reasons[0].what
    assert "esp-1" not in v.reasons[0].what and "power, network" in v.next_step
    f.extra["devices"]["silent_s"] = 0.0
    assert rp.data.verdict(f).level == "normal"


def test_verdict_checks_can_be_extended(monkeypatch):
    """A new kind of evidence (e.g. novel operating states) is a check returning a Reason."""
    extra = lambda facts: rp.data.Reason("watch", "a state the calibration never heard", "Recalibrate.")  # noqa: E731
    monkeypatch.setattr(rp.data, "VERDICT_CHECKS", [*rp.data.VERDICT_CHECKS, extra])
    v = rp.data.verdict(_facts())
    assert v.level == "watch" and v.next_step == "Recalibrate."


def test_uncertain_spans():
    df = pd.DataFrame({"t_utc": np.arange(10.0), "time_source": ["name"] * 3 + ["mtime"] * 4 + ["name"] * 3})
    assert rp.data.uncertain_spans(df, 1.0) == [(3.0, 7.0, 4)]
    assert rp.data.uncertain_spans(df.drop(columns="time_source")) == []


def test_short_names():
    assert rp.data.short_name("/a/b/pump_20261120T080000.flac") == "pump_20261120T080000.flac"
    s = rp.data.short_name("/x/" + "n" * 30 + "_middle_" + "e" * 30 + ".flac", 36)
    assert len(s) == 36 and "…" in s and s.endswith("eee.flac")


def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def test_legends_do_not_cover_the_data(demo):
    """Every time chart's legend sits above its axes (the drift chart's covered its 99 % line)."""
    from calibration.report import charts

    df, alarms = rp.read_log(site(demo))
    recs, _ = rp.data.read_calibrations(site(demo))
    rows, label = rp.data.drift_table(df, recs, alarms)
    figs = [charts.drift_figure(rows, label), charts.timeline_figure(df, alarms, [], [], [(df["t_utc"].iloc[0],
                                                                                          df["t_utc"].iloc[5], 5)])]
    for fig in figs:
        r = _drawn(fig)
        ax = fig.axes[0]
        box = ax.get_window_extent(r)
        assert fig.legends and not ax.get_legend()
        for leg in fig.legends:
            lb = leg.get_window_extent(r)
            assert lb.y0 >= box.y1 - 1, (lb, box)


def test_every_axis_and_colour_bar_has_a_unit(demo):
    from calibration.report import charts

    items = rp.data.analyse_patches(site(demo), rp.read_log(site(demo))[0], 1, rp.data.read_calibrations(
        site(demo))[0], rp.data.score_log_path(site(demo)))
    it = items[0]
    assert it["has_maps"]
    fig = charts.patch_figure(it["x"], it["recon"], it["err"], it["bands"], it["baseline"], it["params"], it["top"])
    _drawn(fig)
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    plots = [a for a in fig.axes if a not in bars]
    assert len(bars) == 3 and len(plots) == 4
    assert all("(" in a.get_ylabel() for a in bars), [a.get_ylabel() for a in bars]
    assert all("(" in a.get_xlabel() for a in plots), [a.get_xlabel() for a in plots]
    assert "(Hz)" in plots[0].get_ylabel() and "(normalised)" in plots[-1].get_ylabel()
    df, alarms = rp.read_log(site(demo))
    tl = charts.timeline_figure(df, alarms, [], [])
    assert tl.axes[0].get_ylabel() == "anomaly score (dimensionless)" and tl.axes[0].get_xlabel() == "time (UTC)"
