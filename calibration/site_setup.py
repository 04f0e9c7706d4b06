"""Setting a site up: create it for a trained model, point it at another model, attach or detach a fault classifier.

The rules live here (what ``humwatch site create/set-model/set-classifier`` do; the CLI only parses and prints): a
model is checked by loading it before a site uses it; a model kept inside the site folder is stored by a relative
path, so it moves with the site; a new model invalidates the calibration in force (its threshold belongs to the old
model); a classifier must read the same front end as the site's model and name the classes that may alarm alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from anomaly.classify import FaultClassifier, load_classifier
from anomaly.decision import DEFAULT_K, DEFAULT_RULE, check_k, parse_rule
from anomaly.detectors import load_detector
from anomaly.errors import DecisionError
from anomaly.features import MicResponse
from anomaly.modeldir import classifier_hash, model_hash
from calibration.calibrate import site_classifier, site_detector
from calibration.errors import SiteError
from calibration.store import (
    MAX_INTERVAL_DAYS,
    Site,
    SiteConfig,
    SiteStore,
    validate_name,
    validate_source,
    validate_text,
)

DEFAULT_INTERVAL_DAYS = 30


def create_site(store: SiteStore, name: str, model: Path, k: float = DEFAULT_K, rule=DEFAULT_RULE,
                machine: str = "", microphone: str = "", response: Path | None = None,
                interval_days: int = DEFAULT_INTERVAL_DAYS, source: str = "") -> Site:
    """Create site ``name`` using the model directory ``model`` (checked by loading it).

    Raises:
        SiteError: a bad name or setting, or the site exists. ModelError: the model cannot be loaded.
        DataError: an unreadable microphone-response curve.
    """
    validate_name(name)
    machine, microphone = validate_text("--machine", machine), validate_text("--microphone", microphone)
    source = validate_source(source)
    load_detector(model)  # fail now, not at calibration time
    if response is not None:
        MicResponse.from_csv(response)
    model_path = Path(model).resolve()
    site_dir = store.site(name).dir.resolve()
    if model_path.is_relative_to(site_dir):  # a model kept inside the site folder moves with it
        model_path = model_path.relative_to(site_dir)
    cfg = SiteConfig(name=name, model_path=str(model_path), model_hash=model_hash(model), machine=machine,
                     microphone=microphone, response_curve=str(Path(response).resolve()) if response else "", k=k,
                     recalibration_days=interval_days, source=source)
    cfg.with_rule(rule)
    return store.create(cfg)


def set_model(site: Site, model: Path) -> None:
    """Point the site at another (e.g. retrained) model; the calibration in force no longer applies."""
    cfg = site.config()
    load_detector(model)
    with site.lock("model change"):
        cfg.model_path, cfg.model_hash = str(Path(model).resolve()), model_hash(model)
        site.save_config(cfg)
        if site.current_id():
            site.adopt(None, "model changed")  # the old threshold belongs to the old model


@dataclass
class Attached:
    classifier: FaultClassifier
    alarm_classes: list[str]  # the classes whose hit alone raises an alarm


def set_classifier(site: Site, classifier: Path, alarm_on: list[str] | None = None) -> Attached:
    """Attach a fault classifier; ``alarm_on`` lists classes that alarm on their own (``all``: every class but
    ``normal``).

    Raises:
        SiteError: an unknown class, or ``normal``, in ``alarm_on``. ModelError / ParamsMismatchError: a classifier
            that cannot be loaded or reads another front end than the site's model.
    """
    cfg = site.config()
    det, _, _ = site_detector(site)
    clf = load_classifier(classifier, det.params)  # also checks the front end matches the site's model
    faults = [c for c in clf.classes if c != "normal"]
    wanted = list(dict.fromkeys(alarm_on or []))
    if "all" in wanted:
        wanted = faults
    unknown = [c for c in wanted if c not in clf.classes]
    if unknown:
        raise SiteError(f"--alarm-on: unknown class {unknown[0]!r} (the classifier has {', '.join(faults)})")
    if "normal" in wanted:
        raise SiteError("--alarm-on normal makes no sense: the normal class never raises an alarm")
    with site.lock("classifier change"):
        cfg.classifier_path, cfg.classifier_hash = str(Path(classifier).resolve()), classifier_hash(classifier)
        cfg.classifier_alarm = wanted
        site.save_config(cfg)
    site_classifier(site, det.params)  # the site now loads it as the monitor will
    return Attached(clf, wanted)


def remove_classifier(site: Site) -> None:
    """Detach the site's fault classifier (and its alarm classes)."""
    cfg = site.config()
    with site.lock("classifier change"):
        cfg.classifier_path, cfg.classifier_hash, cfg.classifier_alarm = "", "", []
        site.save_config(cfg)


# When each setting of `humwatch site set` takes effect, in the words the CLI prints and the history keeps.
EFFECTS = {
    "k": "at the next calibration (site calibrate or recalibrate): the threshold and its certificate are set "
         "together on the site's audio, so the threshold in force stays until then",
    "alarm": "at the next calibration: the certificate's false-alarm figures belong to the rule, so monitoring "
             "keeps the rule of the calibration in force until then",
    "machine": "now: alarm and report band words; --inject-faults uses it at the next calibration",
    "source": "at the next scheduled recalibration; write the job again with `humwatch site schedule` (it names the "
              "source)",
    "interval_days": "now: `site list` and `recalibrate --due` count from it",
    "microphone": "now (a description)",
}


@dataclass
class SettingsChange:
    changes: dict[str, tuple[object, object]]  # setting -> (old, new)
    effects: dict[str, str]  # setting -> when it takes effect (EFFECTS)


def set_settings(site: Site, k: float | None = None, alarm: str | None = None, machine: str | None = None,
                 source: str | None = None, interval_days: int | None = None,
                 microphone: str | None = None) -> SettingsChange:
    """Change a site's settings (None: unchanged), validated by their owners (:mod:`anomaly.decision` for k and
    the alarm rule, :mod:`calibration.store` for texts and the source), and record the change in the site's
    history. Nothing is written when a value is bad or nothing changes.

    Raises:
        SiteError: a bad value (naming it), or no setting given.
    """
    cfg = site.config()
    new = replace(cfg)
    old_rule = cfg.rule
    try:
        if k is not None:
            new.k = check_k(k)
        if alarm is not None:
            new.with_rule(parse_rule(alarm))
    except DecisionError as e:
        raise SiteError(str(e)) from None
    if machine is not None:
        new.machine = validate_text("--machine", machine)
    if source is not None:
        new.source = validate_source(source)
    if microphone is not None:
        new.microphone = validate_text("--microphone", microphone)
    if interval_days is not None:
        if isinstance(interval_days, bool) or not isinstance(interval_days, int) or \
                not 1 <= interval_days <= MAX_INTERVAL_DAYS:
            raise SiteError(f"--interval-days must be a whole number of days, 1 to {MAX_INTERVAL_DAYS}, got "
                            f"{interval_days!r:.20}")
        new.recalibration_days = interval_days
    if all(v is None for v in (k, alarm, machine, source, interval_days, microphone)):
        raise SiteError("nothing to set: give --k, --alarm, --machine, --source, --interval-days or --microphone")
    changes: dict[str, tuple[object, object]] = {}
    for name, field_ in (("k", "k"), ("machine", "machine"), ("source", "source"),
                         ("interval_days", "recalibration_days"), ("microphone", "microphone")):
        if getattr(new, field_) != getattr(cfg, field_):
            changes[name] = (getattr(cfg, field_), getattr(new, field_))
    if new.rule != old_rule:
        changes["alarm"] = (old_rule.spelling, new.rule.spelling)
    if not changes:
        return SettingsChange({}, {})
    try:
        SiteConfig.from_toml(new.to_toml(), str(site.toml_path))  # the file as it will be read back
    except SiteError as e:  # a bad new value (exit 1), not a damaged file
        raise SiteError(f"not changed: {e}") from None
    with site.lock("settings change"):
        site.save_config(new)
        effects = {name: EFFECTS[name] for name in changes}
        site.record_settings(changes, effects)
    return SettingsChange(changes, effects)
