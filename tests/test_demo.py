"""The end-to-end demo, shortened (the full one runs in `make demo`)."""

from __future__ import annotations

import json

from humwatch_demo import DemoConfig, run_demo


def test_short_demo_tells_the_whole_story(tmp_path):
    lines: list[str] = []
    cfg = DemoConfig(out=tmp_path / "demo", train_minutes=2.0, calibration_minutes=5.0, monitor_minutes=1.0,
                     test_clips=2, epochs=3, export=False, classifier_clips=4, classifier_epochs=3)
    summary = run_demo(cfg, say=lines.append)
    assert [ln[:5] for ln in lines if ln.startswith("[")] == [f"[{i}/7]" for i in range(1, 8)]
    assert summary["classifier"]["held_out_clips"] == 6 * 2 and 0 <= summary["classifier"]["map"] <= 1
    assert any("the classifier: " in ln for ln in lines)  # the alarm's fault is reported (named or not)
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["calibration"] == summary["calibration"]
    assert summary["monitored_patches"] == 62 + 187  # 1 min normal + 3 min developing fault
    assert summary["fault_alarm_after_s"] is not None  # the developing cavitation raised an alarm
    report = tmp_path / "demo" / "report.html"
    assert report.exists() and "demo-pump" in report.read_text()
    # a re-run starts the demo site afresh: the log holds one monitoring run
    run_demo(cfg, say=lambda _m: None)
    from calibration.monitoring.scorelog import read_scores

    assert len(read_scores(tmp_path / "demo" / "sites" / "demo-pump" / "scores.sqlite")) == 62 + 187
