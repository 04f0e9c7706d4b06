"""The site store (calibration.store): site names, site.toml, calibration records, the current pointer, the lock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from helpers import valid_record

from calibration.errors import SiteError, SiteLockedError
from calibration.store import ENV_VAR, Site, SiteConfig, SiteStore, default_root, utc_id, validate_name


def cfg(name: str = "pump-3", **kw) -> SiteConfig:
    return SiteConfig(name=name, model_path="/models/ae", model_hash="0123456789abcdef", **kw)


def record(threshold: float = 1.0) -> dict:
    return valid_record(threshold)


@pytest.fixture
def store(tmp_path) -> SiteStore:
    return SiteStore(tmp_path / "sites")


@pytest.fixture
def site(store) -> Site:
    return store.create(cfg())


# --------------------------------------------------------------------------------------------------------------------
# Site names


@pytest.mark.parametrize("name", ["pump-3", "a", "0", "a_b-c9", "a" * 64])
def test_valid_names(name):
    assert validate_name(name) == name
    assert Site(Path("/tmp"), name).name == name


@pytest.mark.parametrize("name", ["../etc", "/abs", "", "Pump", "-x", "_x", "a" * 65, "a/b", "a b", "<script>",
                                  "pump\n", ".", "..", "a.b", "é"])
def test_invalid_names_raise_site_error_naming_the_value(name):
    with pytest.raises(SiteError) as e:
        validate_name(name)
    assert repr(name) in str(e.value)
    assert "invalid site name" in str(e.value)
    with pytest.raises(SiteError):
        Site(Path("/tmp"), name)
    with pytest.raises(SiteError):
        cfg(name)


@pytest.mark.parametrize("name", [None, 3, b"pump"])
def test_non_string_names(name):
    with pytest.raises(SiteError, match="invalid site name"):
        validate_name(name)


def test_store_refuses_path_names_before_touching_disk(store):
    with pytest.raises(SiteError):
        store.site("../etc")
    assert not store.root.exists()


# --------------------------------------------------------------------------------------------------------------------
# site.toml


def test_toml_round_trip_defaults():
    c = cfg()
    assert SiteConfig.from_toml(c.to_toml(), "site.toml") == c


def test_toml_round_trip_awkward_strings():
    c = cfg(machine='pump "P-3" (the \'old\' one)', microphone="C:\\mics\\piezo\tcontact", notes="line1\nline2 # not a"
            " comment = still text [x]", source="/data/ünïcødé/中文/Ωmega", response_curve="\\\\server\\share\\r.csv",
            k=3.5, alarm_m=2, alarm_n=4, recalibration_days=7, created_utc="2026-01-01T00:00:00Z",
            extra={"ratio": 0.25, "count": 3, "flag": True, "tags": ["a", 'b"c', "d\\e"], "label": "é"})
    back = SiteConfig.from_toml(c.to_toml(), "site.toml")
    assert back == c
    assert back.notes == "line1\nline2 # not a comment = still text [x]"
    assert back.extra["tags"] == ["a", 'b"c', "d\\e"]


def test_toml_round_trip_integer_k():
    c = cfg(k=3)
    back = SiteConfig.from_toml(c.to_toml(), "x")
    assert back.k == 3 and back.alarm_rule == "3 of the last 5 patches over the threshold"


def test_toml_round_trip_non_bmp_character():
    c = cfg(notes="pump by the 🚰 tap", microphone="𝄞 mic")
    assert SiteConfig.from_toml(c.to_toml(), "site.toml") == c


def test_toml_round_trip_extra_key_with_dot():
    c = cfg(extra={"mic.gain": 1.5})
    assert SiteConfig.from_toml(c.to_toml(), "site.toml") == c


@pytest.mark.parametrize("k", [2.99, 5.01, 0, -4, float("nan"), float("inf")])
def test_k_outside_3_to_5(k):
    with pytest.raises(SiteError, match="k must be between 3 and 5"):
        cfg(k=k)


@pytest.mark.parametrize("k", [3, 3.0, 4.5, 5])
def test_k_inside_3_to_5(k):
    assert cfg(k=k).k == k


@pytest.mark.parametrize("m, n", [(0, 5), (6, 5), (-1, 3), (3, 61), (1, 0)])
def test_bad_alarm_rule(m, n):
    with pytest.raises(SiteError, match="alarm rule"):
        cfg(alarm_m=m, alarm_n=n)


def test_bad_recalibration_interval():
    with pytest.raises(SiteError, match="recalibration interval"):
        cfg(recalibration_days=0)


def test_unknown_key_in_site_toml():
    text = cfg().to_toml() + "colour = \"red\"\n"
    with pytest.raises(SiteError, match=r"where/site.toml: unknown settings \['colour'\]"):
        SiteConfig.from_toml(text, "where/site.toml")


@pytest.mark.parametrize("text", ["name = \"a\"\nmodel_path = \n", "name = 'a\n", "[[[", "k = 4\nk = 5\n",
                                  "name = \"a\" model_path = \"m\"\n"])
def test_malformed_toml(text):
    with pytest.raises(SiteError, match=r"where/site.toml: malformed TOML"):
        SiteConfig.from_toml(text, "where/site.toml")


def test_incomplete_toml():
    with pytest.raises(SiteError, match="incomplete site settings"):
        SiteConfig.from_toml('name = "a"\n', "x")


@pytest.mark.parametrize("old, new, needle", [("k = 4.0", "k = 2.0", "k must be between"),
                                               ("alarm_m = 3", "alarm_m = 9", "alarm rule"),
                                               ('name = "pump-3"', 'name = "../etc"', "invalid site name")])
def test_invalid_values_in_site_toml(old, new, needle):
    text = cfg().to_toml()
    assert old in text
    with pytest.raises(SiteError, match=needle):
        SiteConfig.from_toml(text.replace(old, new), "x")


def test_wrong_typed_value_in_site_toml():
    text = cfg().to_toml().replace("k = 4.0", 'k = "four"')
    with pytest.raises(SiteError):
        SiteConfig.from_toml(text, "x")


def test_site_config_from_disk_and_model_dir(store, tmp_path):
    s = store.create(cfg(name="rel"))
    assert s.exists() and s.config().name == "rel"
    assert s.config().created_utc  # filled in by create
    c = s.config()
    c.model_path = "models/ae"
    s.save_config(c)
    assert s.model_dir() == (s.dir / "models" / "ae").resolve()
    c.model_path = "/abs/ae"
    s.save_config(c)
    assert s.model_dir() == Path("/abs/ae")


def test_corrupt_site_toml_on_disk(site):
    site.toml_path.write_text("this is not toml ===\n")
    with pytest.raises(SiteError, match="malformed TOML") as e:
        site.config()
    assert str(site.toml_path) in str(e.value)


def test_missing_site(store):
    with pytest.raises(SiteError, match=r"no site 'nosuch'.*humwatch site create nosuch"):
        store.site("nosuch").config()


def test_create_twice_refused(store, site):
    with pytest.raises(SiteError, match="already exists"):
        store.create(cfg())
    store.create(cfg(machine="other"), exist_ok=True)
    assert store.site("pump-3").config().machine == "other"


# --------------------------------------------------------------------------------------------------------------------
# Calibration records and the current pointer


def test_add_calibration_never_overwrites(site):
    a = site.add_calibration(record(1.0))
    b = site.add_calibration(record(2.0))
    c = site.add_calibration(record(3.0), make_current=False)
    assert len({a, b, c}) == 3
    assert site.calibration_ids() == [a, b, c]  # ids sort by time
    assert sorted(p.name for p in site.calibrations_dir.iterdir()) == [f"{x}.json" for x in (a, b, c)]  # no temp left
    assert [r["threshold"]["threshold"] for r in site.history()] == [1.0, 2.0, 3.0]
    assert [r["id"] for r in site.history()] == [a, b, c]
    assert site.current_id() == b  # c was not made current
    assert (site.dir / "current").read_text() == b + "\n"
    assert site.calibration()["threshold"]["threshold"] == 2.0
    assert site.calibration(a)["threshold"]["threshold"] == 1.0


def test_add_calibration_when_the_id_exists(site, monkeypatch):
    """Same clock tick twice: the second call must pick another id, not overwrite."""
    import calibration.store as st

    ticks = iter(["20260101T000000.000001Z"] * 3 + ["20260101T000000.000002Z"])
    monkeypatch.setattr(st, "utc_id", lambda t=None: next(ticks))
    a = site.add_calibration(record(1.0))
    b = site.add_calibration(record(2.0))
    assert (a, b) == ("20260101T000000.000001Z", "20260101T000000.000002Z")
    assert site.calibration(a)["threshold"]["threshold"] == 1.0


def test_add_calibration_does_not_mutate_input(site):
    r = record()
    site.add_calibration(r)
    assert "id" not in r


def test_utc_id_sorts_like_time():
    from datetime import UTC, datetime, timedelta

    t = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert utc_id(t) == "20260102T030405.678901Z"
    ids = [utc_id(t + timedelta(microseconds=d)) for d in (0, 1, 999_999, 86_400_000_000)]
    assert ids == sorted(ids) and len(set(ids)) == 4


def test_uncalibrated_site(site):
    assert site.current_id() is None and site.calibration_ids() == [] and site.history() == []
    with pytest.raises(SiteError, match=r"not calibrated yet.*humwatch site calibrate pump-3"):
        site.calibration()


def test_empty_current_pointer_means_uncalibrated(site):
    site.add_calibration(record())
    (site.dir / "current").write_text("\n")
    assert site.current_id() is None
    with pytest.raises(SiteError, match="humwatch site calibrate"):
        site.calibration()


def test_dangling_and_corrupt_records(site):
    (site.dir / "current").write_text("20990101T000000.000000Z\n")
    with pytest.raises(SiteError, match="names calibration 20990101T000000.000000Z, which is missing"):
        site.calibration()
    cid = site.add_calibration(record())
    (site.calibrations_dir / f"{cid}.json").write_text("{not json")
    with pytest.raises(SiteError, match="corrupt calibration record"):
        site.calibration()


# --------------------------------------------------------------------------------------------------------------------
# The store


def test_names_ignores_junk(store, tmp_path):
    for n in ("b-site", "a-site"):
        store.create(cfg(name=n))
    (store.root / "no-toml").mkdir()
    (store.root / "Upper").mkdir()
    (store.root / "Upper" / "site.toml").write_text(cfg().to_toml())
    (store.root / ".hidden").mkdir()
    (store.root / ".hidden" / "site.toml").write_text(cfg().to_toml())
    (store.root / "file-not-dir").write_text("x")
    (store.root / "dir-toml").mkdir()
    (store.root / "dir-toml" / "site.toml").mkdir()  # a directory called site.toml: a damaged site
    assert store.names() == ["a-site", "b-site", "dir-toml"]
    with pytest.raises(SiteError, match="site.toml: not a regular file"):
        store.site("dir-toml").config()


def test_names_of_missing_root(tmp_path):
    assert SiteStore(tmp_path / "nothing").names() == []
    assert SiteStore(tmp_path / "nothing").check_root() is False
    with pytest.raises(SiteError, match="nothing: no such site store"):
        SiteStore(tmp_path / "nothing").check_root(must_exist=True)


def test_a_root_that_is_not_a_folder_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SiteError, match="file: not a folder"):
        SiteStore(tmp_path / "file").names()
    below = SiteStore(tmp_path / "file" / "below")  # under a file: nothing can be there
    assert below.names() == []
    with pytest.raises(SiteError, match="below: no such site store"):
        below.check_root(must_exist=True)


def test_env_var_picks_the_root(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "elsewhere"))
    assert default_root() == tmp_path / "elsewhere"
    assert SiteStore().root == tmp_path / "elsewhere"
    SiteStore().create(cfg())
    assert (tmp_path / "elsewhere" / "pump-3" / "site.toml").is_file()
    assert SiteStore(tmp_path / "explicit").root == tmp_path / "explicit"  # an explicit root wins
    monkeypatch.setenv(ENV_VAR, "")
    assert default_root() == Path("sites")
    monkeypatch.delenv(ENV_VAR)
    assert default_root() == Path("sites") and SiteStore().root == Path("sites")


# --------------------------------------------------------------------------------------------------------------------
# The lock

TRY_LOCK = textwrap.dedent("""
    import sys
    from calibration.errors import SiteLockedError
    from calibration.store import SiteStore
    site = SiteStore(sys.argv[1]).site(sys.argv[2])
    try:
        with site.lock("recalibration"):
            print("ACQUIRED")
    except SiteLockedError as e:
        print("LOCKED:", e)
        sys.exit(75)
""")


def try_lock_in_subprocess(site: Site) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TRY_LOCK, str(site.dir.parent), site.name], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])


def test_lock_blocks_another_process_at_once(site):
    with site.lock("calibration"):
        r = try_lock_in_subprocess(site)
        assert r.returncode == 75, r.stdout + r.stderr
        assert r.stdout.startswith("LOCKED:"), r.stdout
        assert f"pid {os.getpid()}" in r.stdout
        assert "site 'pump-3' is busy: calibration by pid" in r.stdout
    r = try_lock_in_subprocess(site)  # released: the other process gets it now
    assert r.returncode == 0 and r.stdout.strip() == "ACQUIRED", r.stdout + r.stderr


def test_lock_blocks_another_thread(site):
    result = {}
    held, done = threading.Event(), threading.Event()

    def holder():
        with site.lock("recalibration"):
            held.set()
            done.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(30)
        with pytest.raises(SiteLockedError) as e:
            with site.lock():
                result["entered"] = True
        assert f"recalibration by pid {os.getpid()}" in str(e.value)
        assert e.value.exit_code == 75
        assert "entered" not in result
    finally:
        done.set()
        t.join(30)
    with site.lock():  # released
        pass


def test_lock_released_on_error(site):
    with pytest.raises(RuntimeError):
        with site.lock():
            raise RuntimeError("boom")
    with site.lock():
        pass


def test_lock_file_is_not_a_record(site):
    with site.lock():
        pass
    assert (site.dir / ".lock").is_file()
    assert site.calibration_ids() == [] and SiteStore(site.dir.parent).names() == ["pump-3"]
    assert site.config() == SiteConfig.from_toml(site.toml_path.read_text(), "x")
