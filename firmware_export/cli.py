"""``humwatch export``: the firmware export command.

Heavy modules (torch, TensorFlow, onnx2tf, the interpreters) are imported inside the command, so ``humwatch --help``
stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from anomaly.cli_util import console, esc, progress, user_errors
from calibration.fleet.cli import RayAddress, Restart, Sites, Workers, fleet_app
from firmware_export.targets import DEFAULT_MAX_MODEL_BYTES, DEFAULT_TARGET, TARGETS

app = typer.Typer(no_args_is_help=True)


@app.command(rich_help_panel="Firmware")
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write (replaced as a whole, atomically; "
                                      "left untouched when a gate fails).")],
    site: Annotated[str | None, typer.Option("--site", "-s", help="A calibrated site: its model, mic response, "
                                             "threshold rule and calibration audio.")] = None,
    model: Annotated[Path | None, typer.Option("--model", "-m", help="A model directory instead of a site (needs "
                                               "--representative; the threshold is then provisional).")] = None,
    target: Annotated[str, typer.Option(help=f"{' | '.join(TARGETS)} (for the latency estimate).")] = DEFAULT_TARGET,
    max_model_bytes: Annotated[int, typer.Option(help="Size budget of model_int8.tflite, and of both int8 models "
                                                 "together when a classifier is exported (gate).")]
    = DEFAULT_MAX_MODEL_BYTES,
    representative: Annotated[list[Path] | None, typer.Option(
        "--representative", "-r", help="Normal audio (files or directories, repeatable) for the int8 calibration; "
        "with --model also for the threshold and the parity check.")] = None,
    classifier: Annotated[Path | None, typer.Option(
        "--classifier", "-c", help="Fault classifier directory (`humwatch classify train`) to export as a second int8 "
        "model; overrides the site's classifier.")] = None,
    no_classifier: Annotated[bool, typer.Option("--no-classifier", help="Export the anomaly model only, even when "
                                                "the site has a fault classifier.")] = False,
    validate_with: Annotated[Path | None, typer.Option(
        "--validate-with", help="Labelled recordings of this machine (normal_*/anomaly_* clips): clip AUC and pAUC of "
        "the float and int8 models, the device's false alarms and alarm delay on them, and an AUC-drop gate.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON on stdout (also when a gate "
                                           "fails) instead of the summary.")] = False,
    sites_dir: Annotated[Path | None, typer.Option("--sites-dir", envvar="HUMWATCH_SITES",
                                                   help="Site store root [default: ./sites].")] = None,
) -> None:
    """Export a model for microcontrollers: ONNX, TFLite float + int8, C arrays, front-end header, manifest.

    Runs PyTorch, ONNX Runtime, float and int8 TFLite (and TensorFlow Lite Micro) on held-out calibration patches and
    injected faults, re-derives the threshold on the int8 model's scores, and checks the gates. The site's fault
    classifier (or --classifier DIR) is exported too, as a second int8 model with its own gates. Exit codes: 0 all
    gates passed, 3 a gate failed (size, TFLM ops, float parity, int8 correlation, AUC drop, classifier logits and
    decisions; nothing written), 1 any other error.

    Example: humwatch export --site pump-3 --out firmware/model --target esp32-s3
    """
    with user_errors():
        from firmware_export.errors import GateFailed
        from firmware_export.export import ExportRequest, run_export

        req = ExportRequest(out=out, site=site, model=model, sites_dir=sites_dir, target=target,
                            max_model_bytes=max_model_bytes, representative=list(representative or []),
                            classifier=classifier, no_classifier=no_classifier, validate_with=validate_with)
        try:
            with progress(transient=True) as bar:
                task = bar.add_task("export", total=100, info="")
                manifest = run_export(req, on_progress=lambda what, f: bar.update(task, completed=round(100 * f),
                                                                                   info=esc(what)))
        except GateFailed as e:
            if json_out and e.manifest is not None:
                typer.echo(json.dumps(e.manifest, indent=2))
            elif e.manifest is not None:
                _summary(e.manifest, out, written=False)
            raise
        if json_out:
            typer.echo(json.dumps(manifest, indent=2))
        else:
            _summary(manifest, out, written=True)


@fleet_app.command("export")
def fleet_export(
    sites: Sites = None,
    target: Annotated[str, typer.Option(help=f"{' | '.join(TARGETS)} (for the latency estimate).")] = DEFAULT_TARGET,
    no_classifier: Annotated[bool, typer.Option("--no-classifier", help="The anomaly model only.")] = False,
    ray_address: RayAddress = None, workers: Workers = None, restart: Restart = False,
    sites_dir: Annotated[Path | None, typer.Option("--sites-dir", envvar="HUMWATCH_SITES",
                                                   help="Site store root [default: ./sites].")] = None,
) -> None:
    """Export the firmware of every calibrated site (or the --site ones) into sites/NAME/firmware/, one Ray task
    per site; a site whose gates fail keeps its previous firmware and is reported as failed."""
    with user_errors():
        from calibration.fleet.cli import run_fleet
        from calibration.fleet.jobs import JobOptions
        from firmware_export.fleet import task_export

        opts = JobOptions(extra=(("target", target), ("no_classifier", no_classifier)))
        run_fleet("export", sites, sites_dir, opts, ray_address, workers, restart, task=task_export)


def _fmt(v, spec: str = ".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def _summary(m: dict, out: Path, written: bool) -> None:
    mod, thr, tflm = m["model"], m["threshold"], m["tflm"]
    s = mod["sizes"]
    console.print(f"model {m['source']['model_hash']}" + (f", site {m['source']['site']} calibration "
                                                          f"{m['source']['calibration_id']}" if m["source"]["site"]
                                                          else " (no site)"))
    console.print(f"sizes: int8 {s['tflite_int8']:,} B, float {s['tflite_float']:,} B, ONNX {s['onnx']:,} B; "
                  f"{mod['params']:,} params, {mod['macs_per_patch'] / 1e6:.2f} M MACs/patch; ops "
                  + ", ".join(mod["tflite_ops"]))
    if tflm.get("runs"):
        console.print(f"TFLM: runs, arena {tflm['arena_bytes']:,} B measured "
                      f"(recommend {tflm['arena_bytes_recommended']:,} B); int8 outputs vs LiteRT max "
                      f"{tflm['max_lsb_diff_vs_litert']} LSB")
    else:
        console.print(f"TFLM: {esc(tflm.get('reason', 'not run'))}")
    t = Table("runtime", "Pearson (normal)", "Pearson (all)", "max rel err", "AUC", "AUC drop")
    par = m["parity"]["runtimes"]
    base = par["pytorch"]["auc"]
    for rt, row in par.items():
        nrm, alls = row.get("normal", {}), row.get("all", {})
        t.add_row(rt, _fmt(nrm.get("pearson"), ".6f") if nrm else "-",
                  _fmt(alls.get("pearson"), ".6f") if alls else "-",
                  _fmt(nrm.get("max_rel_error"), ".2e") if nrm else "-", _fmt(row["auc"]),
                  _fmt(None if base is None or row["auc"] is None else base - row["auc"], "+.4f") if rt != "pytorch"
                  else "-")
    console.print(t)
    site_thr = thr.get("site_pytorch")
    console.print(f"threshold (int8 domain) {thr['int8']:.6g} = mean {thr['int8_mean']:.4g} + {thr['k']:g}σ "
                  f"{thr['int8_std']:.4g}; float model {thr['pytorch_reproduced']:.6g}"
                  + (f" (site {site_thr:.6g})" if site_thr is not None else "")
                  + f"; decisions agree on {thr['decision_agreement']:.1%} of patches; alarm {thr['alarm_rule']}")
    est = m["latency_estimate"]["targets"][m["target"]]
    console.print(f"estimated {est['ms_per_patch']:.1f} ms per patch on {m['target']} (an estimate, see manifest)")
    _classifier_summary(m.get("classifier") or {}, m["target"])
    _detection_summary(m.get("detection") or {})
    for g in m["gates"]["checks"]:
        mark = "[green]pass[/]" if g["passed"] else "[red]FAIL[/]"
        console.print(f"  {mark} {esc(g['gate'])}: {esc(g['detail'])}", markup=True)
    if written:
        console.print(f"wrote {esc(out)}/ in {m['timing_seconds'].get('total', 0):.0f} s (manifest.json lists every "
                      "file)")


def _detection_summary(d: dict) -> None:
    """What the export knows about detecting this machine's faults: the labelled recordings first, then what the
    injected simulator faults are (and are not)."""
    lab, inj = d.get("labelled"), d.get("injected") or {}
    if lab:
        st = lab.get("int8_stream") or {}
        delay = ("no alarm" if st.get("delay_s") is None else f"alarm {st['delay_s']:.0f} s after the first "
                 "anomalous clip")
        pt, q = lab["pytorch"], lab["tflite_int8"]
        console.print(f"detection on {lab['n_normal']} normal + {lab['n_anomaly']} anomalous labelled clips of this "
                      f"machine: AUC {_fmt(pt['auc'], '.3f')} (int8 {_fmt(q['auc'], '.3f')}), pAUC "
                      f"{_fmt(pt['pauc'], '.3f')} (int8 {_fmt(q['pauc'], '.3f')}; standardised, chance 0.5); device "
                      f"stream: {st.get('false_alarms', 0)} false alarm(s), {delay}", markup=False)
    if inj:
        console.print(f"injected for the parity check: {inj['description']}", markup=False)
    if inj.get("warning"):
        console.print(f"[yellow]warning[/]: {escape(inj['warning'])}")
    elif not lab and d:
        console.print("note: no labelled recordings given (--validate-with DIR): the AUC above is on injected "
                      "simulator faults, not a measure of real detection", markup=False)


def _classifier_summary(c: dict, target: str) -> None:
    """The classifier's lines of the summary: size, TFLM, parity of logits and decisions, thresholds."""
    if not c.get("included"):
        console.print(f"classifier: not exported ({esc(c.get('reason', 'none'))})")
        return
    src, mod, tflm, par = c["source"], c["model"], c["tflm"], c["parity"]
    s = mod["sizes"]
    console.print(f"classifier {src['hash']} ({esc(src['backbone'])}, {len(src['classes'])} classes, {src['output']}, "
                  f"temperature {src['temperature']:.3g} folded): int8 {s['tflite_int8']:,} B, float "
                  f"{s['tflite_float']:,} B; {mod['params']:,} params, {mod['macs_per_patch'] / 1e6:.2f} M MACs/patch; "
                  "ops " + ", ".join(mod["tflite_ops"]))
    if tflm.get("runs"):
        both = tflm.get("both_models", {})
        console.print(f"classifier TFLM: runs, arena {tflm['arena_bytes']:,} B measured (recommend "
                      f"{tflm['arena_bytes_recommended']:,} B" + (f"; both models {both['separate_arenas_bytes']:,} B "
                                                                  "in two arenas" if both else "")
                      + f"); int8 outputs vs LiteRT max {tflm['max_lsb_diff_vs_litert']} LSB")
    else:
        console.print(f"classifier TFLM: {esc(tflm.get('reason', 'not run'))}")
    rts = par["runtimes"]
    console.print(f"classifier parity on {par['patches']['normal_held_out']} normal + {par['patches']['fault']} fault "
                  "patches: max |logit - PyTorch| ONNX Runtime "
                  f"{_fmt(rts['onnxruntime']['max_abs_logit_diff'], '.1e')}, float TFLite "
                  f"{_fmt(rts['tflite_float']['max_abs_logit_diff'], '.1e')}, int8 "
                  f"{_fmt(rts['tflite_int8']['max_abs_logit_diff'], '.3f')}"
                  + (f" ({_fmt(rts['tflite_int8']['max_abs_logit_diff_in_range'], '.3f')} within its range, "
                     f"{rts['tflite_int8']['share_saturated']:.1%} saturated)"
                     if rts["tflite_int8"].get("share_saturated") else "")
                  + "; int8 logit Pearson "
                  f"{_fmt(rts['tflite_int8']['pearson'], '.4f')}; decisions agree on "
                  f"{_fmt(rts['tflite_int8']['decision_agreement'], '.2%')} of patch x class")
    thr = c["thresholds"]["classes"]
    console.print("classifier thresholds (probability / logit): " + ", ".join(
        f"{k} {v['probability']:.3g}" + (f" / {v['logit']:+.3g}" if v["logit"] is not None else "")
        + (" (alarm class)" if v["alarm"] else "") for k, v in thr.items()), markup=False)
    est = c["latency_estimate"]["targets"].get(target)
    if est:
        console.print(f"classifier estimated {est['ms_per_patch']:.1f} ms per patch on {target} (an estimate)")
