"""``humwatch fleet export``: the firmware export of every calibrated site as one fleet task per site
(:mod:`calibration.fleet.jobs`), written into the site's own folder (``sites/<name>/firmware/``), replaced as a whole
as ``humwatch export --out`` does."""

from __future__ import annotations

from pathlib import Path

from calibration.fleet.jobs import JobOptions
from calibration.store import SiteStore
from firmware_export.targets import DEFAULT_TARGET

OUT_DIR = "firmware"


def task_export(root: str, name: str, opts: JobOptions) -> str:
    from firmware_export.export import ExportRequest, run_export

    site = SiteStore(root).site(name)
    out = site.dir / OUT_DIR
    req = ExportRequest(out=out, site=name, sites_dir=Path(root), target=opts.get("target", DEFAULT_TARGET),
                        no_classifier=bool(opts.get("no_classifier", False)))
    m = run_export(req)
    size = m["model"]["sizes"]["tflite_int8"]
    return f"exported to {out}: int8 model {size:,} B, threshold {m['threshold']['int8']:.6g} (int8 domain)"
