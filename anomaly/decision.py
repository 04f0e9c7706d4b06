"""How a patch score becomes an alarm: the one owner of the threshold rule, the alarm rule and their defaults.

Everything that sets a threshold or applies an alarm rule calls this module: the detectors' provisional threshold
(:mod:`anomaly.detectors`), calibration and its certificate (:mod:`calibration.calibrate`,
:mod:`calibration.threshold`), the site store's defaults (:mod:`calibration.store`), monitoring, the firmware export
and the constants of the C headers it generates (:mod:`firmware_export.c_arrays`). Changing a default here changes it
everywhere.

* **Threshold rule**: ``mean + k·σ`` of normal patch scores, σ the sample standard deviation (ddof = 1); k in
  ``K_RANGE`` (3…5), default ``DEFAULT_K``. A patch is *over* when its score is strictly greater than the threshold
  (:func:`over`).
* **Alarm rule**: a small frozen value object. ``DEFAULT_RULE`` is :class:`WindowMean` over 120 patches: alarm while
  the mean of the last 120 standardised log scores is beyond a limit calibrated per site (its centre, scale and
  limit live in the rule object, stored with the calibration record). :class:`MOfN` raises an alarm when at least
  ``m`` of the last ``n`` patches are over the threshold (``MOFN_RULE``, 3 of 5: the rule of sites made before #14,
  and the one class hits of a fault classifier are judged by, :func:`hits_rule`). Every rule has ``kind``,
  ``onsets(scores, threshold)`` (where alarms start, for a whole sequence), ``stream(threshold)`` (a state whose
  ``update(score)`` returns True at an onset), ``to_dict()``/``from_dict()``, ``parse()``/``spelling``,
  ``describe()``, ``c_defines(prefix)`` (the constants of the generated C headers) and ``bound_to_scores`` (True when
  its calibration holds statistics of one model's scores, as the windowed mean's centre and scale: the scores of
  another model, e.g. an int8 export's, need that model's own rule, not just its threshold). :func:`rule_from_dict` and
  :func:`parse_rule` read any of them back.

The false-alarm figures are the certificate's, in :mod:`calibration.threshold` (the m-of-n rule's tail fit; the
windowed mean's calibration over :mod:`calibration.upcrossing`); they replay sequences through the rule object.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from typing import ClassVar, Protocol

import numpy as np

from anomaly.errors import DecisionError

DEFAULT_K = 4.0
K_RANGE = (3.0, 5.0)
MAX_WINDOW = 60  # the longest m-of-n window (patches) a site may use; the C state holds one byte per patch of it
DEFAULT_MIN_MINUTES = 30.0  # the least calibration audio the threshold's tail is estimated from, unless --min-minutes
# lowers it or --force accepts less (both are marked on the certificate)
MAX_MEAN_WINDOW = 600  # the longest windowed-mean rule (patches, ~10 min); the C state holds 4 bytes per patch of it
# Windowed-mean rule defaults (issue #14, measured on the simulated fleet, docs/calibration.md): a 120-patch window
# (~2 min), two-sided, and a limit of max(MEAN_LIMIT_FLOOR, the limit the certificate states TARGET_PER_DAY at).
MEAN_WINDOW = 120
MEAN_LIMIT_FLOOR = 1.5  # calibration standard deviations of the log score
TARGET_PER_DAY = 0.1  # false alarms per day the limit is set for (above the floor)
CROSSFIT_BLOCKS = 5  # the calibration's cross-fit: each block standardised by a fit on the others
Z_SCALE = 65536  # the rule sums standardised scores as integers of 1/Z_SCALE sd: Python and C agree exactly
Z_CLAMP = 1000.0  # |z| beyond this many sds counts as this many (a score of 0, NaN or Inf included)


# -- threshold rule ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Threshold:
    """A threshold set by the rule: ``value = mean + k * std`` of ``n`` scores."""

    value: float
    mean: float
    std: float
    k: float
    n: int


def fit_threshold(scores, k: float = DEFAULT_K) -> Threshold:
    """``mean + k·σ`` of ``scores``, σ with ddof = 1 (0 for a single score).

    Raises:
        DecisionError: no scores.
    """
    s = np.asarray(scores, float).ravel()
    if s.size == 0:
        raise DecisionError("cannot set a threshold on no scores")
    mean = float(s.mean())
    std = float(s.std(ddof=1)) if s.size > 1 else 0.0
    return Threshold(value=mean + k * std, mean=mean, std=std, k=float(k), n=int(s.size))


def threshold(scores, k: float = DEFAULT_K) -> float:
    """The threshold value ``mean + k·σ`` of ``scores`` (see :func:`fit_threshold`)."""
    return fit_threshold(scores, k).value


def check_k(k) -> float:
    """``k`` as a float when it is a number in ``K_RANGE``; else DecisionError naming the value."""
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise DecisionError(f"k must be a number, got {k!r}")
    lo, hi = K_RANGE
    if not lo <= float(k) <= hi:
        raise DecisionError(f"k must be between {lo:g} and {hi:g} (the threshold is mean + k sigma), got {k}")
    return float(k)


def describe_threshold(k: float) -> str:
    """``mean + 4σ``: the rule in words, for messages and help texts."""
    return f"mean + {k:g}σ"


def over(scores, threshold: float, inclusive: bool = False) -> np.ndarray:
    """Which patches are over the threshold: ``score > threshold`` (``>=`` with ``inclusive``, as the fault
    classifier compares probabilities with its class thresholds)."""
    s = np.asarray(scores)
    return s >= threshold if inclusive else s > threshold


def rising_edges(active) -> np.ndarray:
    """Indices where a boolean "in alarm" sequence switches on (an alarm, or an event, starts there)."""
    a = np.asarray(active, bool)
    return np.flatnonzero(a & ~np.r_[False, a[:-1]])


# -- alarm rules -------------------------------------------------------------------------------------------------------
class RuleState(Protocol):
    """A rule applied patch by patch (what a monitor holds)."""

    active: bool

    def update(self, score: float) -> bool:
        """Add one patch's score; True when an alarm starts at this patch."""


class AlarmRule(Protocol):
    """What every alarm rule provides (see the module docstring)."""

    kind: ClassVar[str]
    bound_to_scores: ClassVar[bool]  # calibrated constants of one model's scores: another model's need its own rule

    def onsets(self, scores, threshold: float, inclusive: bool = False) -> np.ndarray: ...

    def stream(self, threshold: float, inclusive: bool = False) -> RuleState: ...

    def to_dict(self) -> dict: ...

    def describe(self, what: str = "over the threshold") -> str: ...

    def c_defines(self, prefix: str) -> str: ...


@dataclass(frozen=True)
class MOfN:
    """Alarm when at least ``m`` of the last ``n`` patches are over the threshold.

    An alarm *starts* (an onset) at the patch where the window first holds ``m`` exceedances after holding fewer; it
    stays active while the window holds ``m`` or more.
    """

    m: int
    n: int
    kind: ClassVar[str] = "m_of_n"
    bound_to_scores: ClassVar[bool] = False  # the threshold alone places it in a model's score domain

    def __post_init__(self) -> None:
        for name in ("m", "n"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise DecisionError(f"alarm rule: {name} must be a whole number, got {v!r}")
        if not 1 <= self.m <= self.n <= MAX_WINDOW:
            raise DecisionError(f"alarm rule needs 1 <= m <= n <= {MAX_WINDOW}, got {self.m} of {self.n}")

    # -- applying it ---------------------------------------------------------------------------------------------
    def onsets_over(self, exceeded) -> np.ndarray:
        """Indices where alarms start, for a boolean exceedance sequence (patch over the threshold or not)."""
        x = np.asarray(exceeded, bool).astype(int)
        if x.size == 0:
            return np.zeros(0, np.int64)
        count = np.convolve(x, np.ones(self.n, int))[: x.size]  # exceedances in the window ending at each patch
        return rising_edges(count >= self.m)

    def onsets(self, scores, threshold: float, inclusive: bool = False) -> np.ndarray:
        """Indices of the patches where alarms start, for a whole sequence of scores in recording order."""
        return self.onsets_over(over(scores, threshold, inclusive))

    def stream(self, threshold: float, inclusive: bool = False) -> MOfNState:
        """The rule patch by patch, for a monitor: ``update(score)`` is True at an onset."""
        return MOfNState(self, float(threshold), inclusive)

    # -- describing and storing it ---------------------------------------------------------------------------------
    def describe(self, what: str = "over the threshold") -> str:
        """``3 of the last 5 patches over the threshold``."""
        return f"{self.m} of the last {self.n} patches {what}"

    @property
    def short(self) -> str:
        """``3 of 5``."""
        return f"{self.m} of {self.n}"

    @property
    def spelling(self) -> str:
        """How the CLI spells it: ``3/5``."""
        return f"{self.m}/{self.n}"

    @classmethod
    def parse(cls, text: str) -> MOfN:
        """``3/5`` or ``3 of 5`` → ``MOfN(3, 5)``."""
        try:
            m, n = (int(x) for x in str(text).lower().replace(" of ", "/").split("/"))
        except ValueError:
            raise DecisionError(f"--alarm must look like 3/5 (alarm when 3 of the last 5 patches exceed), got "
                                f"{text!r}") from None
        return cls(m, n)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "m": self.m, "n": self.n}

    @classmethod
    def from_dict(cls, d: dict) -> MOfN:
        try:
            return cls(d["m"], d["n"])
        except (KeyError, TypeError):
            raise DecisionError(f"an m_of_n alarm rule needs whole numbers m and n, got {d!r}") from None

    def c_defines(self, prefix: str) -> str:
        """The rule's constants for a generated C header (``#define HW_ALARM_M 3`` ...); the C reference
        (``hw_alarm_update`` in ``frontend_ref/hw_frontend.c``) implements the rule from them."""
        return f"#define {prefix}_M {int(self.m)}\n#define {prefix}_N {int(self.n)}"


class MOfNState:
    """:class:`MOfN` applied one patch at a time."""

    def __init__(self, rule: MOfN, threshold: float, inclusive: bool = False):
        self.rule, self.threshold, self.inclusive = rule, threshold, inclusive
        self.window: deque[bool] = deque(maxlen=rule.n)
        self.active = False

    def push(self, exceeded: bool) -> bool:
        """Add one patch's exceedance; True when an alarm starts here."""
        self.window.append(bool(exceeded))
        now = sum(self.window) >= self.rule.m
        onset = now and not self.active
        self.active = now
        return onset

    def update(self, score: float) -> bool:
        """Add one patch's score; True when an alarm starts here."""
        return self.push(score >= self.threshold if self.inclusive else score > self.threshold)


def _whole(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise DecisionError(f"alarm rule: {name} must be a whole number, got {v!r}")
    return int(v)


def _finite(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
        raise DecisionError(f"alarm rule: {name} must be a finite number, got {v!r}")
    return float(v)


def standard_of(scores) -> tuple[float, float]:
    """``(centre, scale)``: mean and sample sd (ddof = 1) of the log scores, how :class:`WindowMean` standardises.

    Raises:
        DecisionError: fewer than 2 scores, a score <= 0 or not finite, or all scores equal.
    """
    s = np.asarray(scores, np.float64).ravel()
    if s.size < 2 or not np.isfinite(s).all() or (s <= 0).any():
        raise DecisionError(f"the windowed-mean rule standardises log scores: needs at least 2 finite positive "
                            f"scores, got {s.size} (min {s.min() if s.size else float('nan'):.3g})")
    x = np.log(s)
    sd = float(x.std(ddof=1))
    if not sd > 0:
        raise DecisionError("the windowed-mean rule cannot standardise scores that are all equal (sd 0)")
    return float(x.mean()), sd


@dataclass(frozen=True)
class WindowMean:
    """Alarm while the mean of the last ``n`` standardised log scores is beyond ``±limit`` (``sides`` = 2; only above
    ``+limit`` with ``sides`` = 1).

    Each patch score ``s`` becomes ``z = (ln s − centre) / scale`` (the calibration's log-score mean and sd), clamped
    to ``±Z_CLAMP`` and held as the integer ``floor(z·Z_SCALE + 0.5)``; the rule keeps the exact integer sum ``S`` of
    the last ``n`` of them and is active while ``|S| > limit_q = floor(limit·n·Z_SCALE)``. Integer sums make Python
    and the C mirror (``hw_alarm_update``) agree patch for patch; a score <= 0 or NaN counts as ``−Z_CLAMP``, +Inf as
    ``+Z_CLAMP``. No alarm during the first ``n − 1`` patches; an onset is a rising edge.

    ``centre``, ``scale`` and ``limit`` are the site's calibration (:func:`calibration.threshold.calibrate_mean_rule`);
    a rule without them (what ``site.toml`` holds) describes itself but cannot be applied. The patch threshold
    (``mean + k·σ``) that other callers pass stays for exceedance counts and charts; this rule does not use it.
    """

    n: int = MEAN_WINDOW
    sides: int = 2
    centre: float | None = None
    scale: float | None = None
    limit: float | None = None
    kind: ClassVar[str] = "window_mean"
    bound_to_scores: ClassVar[bool] = True  # centre and scale are one model's log-score statistics

    def __post_init__(self) -> None:
        n = _whole("n", self.n)
        if not 2 <= n <= MAX_MEAN_WINDOW:
            raise DecisionError(f"windowed-mean rule needs 2 <= n <= {MAX_MEAN_WINDOW} patches, got {n}")
        if self.sides not in (1, 2) or isinstance(self.sides, bool):
            raise DecisionError(f"windowed-mean rule: sides must be 1 or 2, got {self.sides!r}")
        cal = (self.centre, self.scale, self.limit)
        if any(v is not None for v in cal):
            if any(v is None for v in cal):
                raise DecisionError(f"windowed-mean rule: centre, scale and limit go together, got {cal}")
            _finite("centre", self.centre)
            if not _finite("scale", self.scale) > 0 or not 0 < _finite("limit", self.limit) < Z_CLAMP:
                raise DecisionError(f"windowed-mean rule needs scale > 0 and 0 < limit < {Z_CLAMP:g}, got scale "
                                    f"{self.scale!r}, limit {self.limit!r}")

    # -- calibration -----------------------------------------------------------------------------------------------
    @property
    def calibrated(self) -> bool:
        return self.limit is not None

    def with_calibration(self, centre: float, scale: float, limit: float) -> WindowMean:
        """The same rule with a site's standardisation and limit."""
        return replace(self, centre=float(centre), scale=float(scale), limit=float(limit))

    def uncalibrated(self) -> WindowMean:
        return replace(self, centre=None, scale=None, limit=None)

    def _need(self) -> tuple[float, float, float]:
        if not self.calibrated:
            raise DecisionError(f"the alarm rule {self.short} has no calibration (centre, scale, limit): calibrate "
                                "the site first")
        return self.centre, self.scale, self.limit

    @property
    def limit_q(self) -> int:
        """The integer limit on the window's sum of quantised z (see the class docstring)."""
        return int(math.floor(self._need()[2] * self.n * Z_SCALE))

    # -- applying it ---------------------------------------------------------------------------------------------
    def standardised(self, scores) -> np.ndarray:
        """``z`` per patch (float, clamped), with the log and arithmetic of the C mirror (``math.log``, doubles)."""
        c, sc, _ = self._need()
        return np.fromiter((_z(float(s), c, sc) for s in np.asarray(scores, np.float64).ravel()), np.float64)

    def quantised(self, scores) -> np.ndarray:
        """The integers the rule sums (``floor(z·Z_SCALE + 0.5)``)."""
        return _quantise(self.standardised(scores))

    def active_z(self, z) -> np.ndarray:
        """Whether the rule is active at each patch, for a sequence of standardised values ``z`` (e.g. the
        calibration's cross-fitted ones)."""
        q = _quantise(np.clip(np.asarray(z, np.float64), -Z_CLAMP, Z_CLAMP))
        out = np.zeros(q.size, bool)
        if q.size >= self.n:
            c = np.concatenate([[0], np.cumsum(q)])
            s = c[self.n:] - c[: -self.n]
            lim = self.limit_q
            out[self.n - 1:] = (s > lim) | ((s < -lim) if self.sides == 2 else False)
        return out

    def onsets_z(self, z) -> np.ndarray:
        return rising_edges(self.active_z(z))

    def statistic(self, scores) -> np.ndarray:
        """The window mean of z per patch (NaN during the first n − 1 patches), in calibration sds."""
        q = self.quantised(scores)
        out = np.full(q.size, np.nan)
        if q.size >= self.n:
            c = np.concatenate([[0], np.cumsum(q)])
            out[self.n - 1:] = (c[self.n:] - c[: -self.n]) / (self.n * Z_SCALE)
        return out

    def onsets(self, scores, threshold: float | None = None, inclusive: bool = False) -> np.ndarray:
        """Indices of the patches where alarms start, for a whole sequence of scores in recording order
        (``threshold``, ``inclusive``: the patch threshold's, not used by this rule)."""
        return self.onsets_z(self.standardised(scores))

    def stream(self, threshold: float | None = None, inclusive: bool = False) -> WindowMeanState:
        """The rule patch by patch, for a monitor: ``update(score)`` is True at an onset."""
        self._need()
        return WindowMeanState(self)

    # -- describing and storing it ---------------------------------------------------------------------------------
    def describe(self, what: str = "") -> str:
        """``the mean standardised log score of the last 120 patches beyond ±1.5 calibration sds``."""
        lim = "" if self.limit is None else (f" {'±' if self.sides == 2 else '+'}{self.limit:.3g} calibration sds")
        side = "beyond" if self.sides == 2 else "above"
        return f"the mean standardised log score of the last {self.n} patches {side}{lim or ' its limit'}"

    @property
    def short(self) -> str:
        return f"mean of {self.n}" + ("" if self.sides == 2 else " (upward)")

    @property
    def spelling(self) -> str:
        """How the CLI spells it: ``mean/120`` (two-sided) or ``mean+/120`` (upward only)."""
        return f"mean{'' if self.sides == 2 else '+'}/{self.n}"

    @classmethod
    def parse(cls, text: str) -> WindowMean:
        """``mean/120``, ``mean of 120`` (two-sided) or ``mean+/120`` (alarm on a rising score only)."""
        t = str(text).strip().lower().replace(" of ", "/")
        head, _, n = t.partition("/")
        if head not in ("mean", "mean+") or not n.strip().isdigit():
            raise DecisionError(f"--alarm mean/N (alarm when the mean standardised score of the last N patches leaves "
                                f"its calibrated range; mean+/N: rising only), got {text!r}")
        return cls(int(n), 1 if head == "mean+" else 2)

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "n": self.n, "sides": self.sides}
        if self.calibrated:
            d.update(centre=self.centre, scale=self.scale, limit=self.limit, z_scale=Z_SCALE, z_clamp=Z_CLAMP)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WindowMean:
        try:
            if "z_scale" in d and (d["z_scale"] != Z_SCALE or d.get("z_clamp") != Z_CLAMP):
                raise DecisionError(f"windowed-mean rule stored with z_scale {d['z_scale']!r}, z_clamp "
                                    f"{d.get('z_clamp')!r}; this version uses {Z_SCALE}, {Z_CLAMP:g}")
            return cls(d["n"], d.get("sides", 2), d.get("centre"), d.get("scale"), d.get("limit"))
        except (KeyError, TypeError):
            raise DecisionError(f"a window_mean alarm rule needs a whole number n, got {d!r}") from None

    def c_defines(self, prefix: str) -> str:
        """The rule's constants for a generated C header; ``hw_alarm_update`` in ``frontend_ref/hw_frontend.c``
        implements the rule from them (doubles written to round-trip exactly)."""
        c, sc, _ = self._need()
        return "\n".join([f"#define {prefix}_WINDOW_MEAN 1", f"#define {prefix}_N {self.n}",
                          f"#define {prefix}_SIDES {self.sides}", f"#define {prefix}_CENTRE {c!r}",
                          f"#define {prefix}_SCALE {sc!r}", f"#define {prefix}_Z_SCALE {float(Z_SCALE)!r}",
                          f"#define {prefix}_Z_CLAMP {Z_CLAMP!r}", f"#define {prefix}_LIMIT_Q {self.limit_q}LL"])


def _z(s: float, centre: float, scale: float) -> float:
    """One patch's clamped z (the C mirror's arithmetic: a double log, subtract, divide)."""
    if not s > 0:  # 0, negative, NaN
        return -Z_CLAMP
    z = (math.log(s) - centre) / scale
    return min(max(z, -Z_CLAMP), Z_CLAMP)


def _quantise(z: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(z, np.float64) * float(Z_SCALE) + 0.5).astype(np.int64)


class WindowMeanState:
    """:class:`WindowMean` applied one patch at a time: a ring of the last n quantised z and their exact sum."""

    def __init__(self, rule: WindowMean):
        self.rule = rule
        self.centre, self.scale, _ = rule._need()
        self.limit_q = rule.limit_q
        self.ring: deque[int] = deque(maxlen=rule.n)
        self.sum = 0
        self.active = False

    @property
    def mean(self) -> float | None:
        """The window mean of z so far (None during the warm-up)."""
        return self.sum / (self.rule.n * Z_SCALE) if len(self.ring) == self.rule.n else None

    def update(self, score: float) -> bool:
        """Add one patch's score; True when an alarm starts here."""
        q = math.floor(_z(float(score), self.centre, self.scale) * float(Z_SCALE) + 0.5)
        if len(self.ring) == self.rule.n:
            self.sum -= self.ring[0]
        self.ring.append(q)
        self.sum += q
        full = len(self.ring) == self.rule.n
        now = full and (self.sum > self.limit_q or (self.rule.sides == 2 and self.sum < -self.limit_q))
        onset = now and not self.active
        self.active = now
        return onset


RULES: dict[str, type] = {MOfN.kind: MOfN, WindowMean.kind: WindowMean}
MOFN_RULE = MOfN(3, 5)  # the m-of-n rule of sites made before #14, and the rule on classifier hits (booleans)
DEFAULT_RULE = WindowMean(MEAN_WINDOW, 2)


def hits_rule(rule) -> MOfN:
    """The rule a stream of yes/no hits (a classifier's class decisions) is judged by: the site's rule when it counts
    hits (m-of-n), else :data:`MOFN_RULE`."""
    return rule if isinstance(rule, MOfN) else MOFN_RULE


def parse_rule(text: str) -> AlarmRule:
    """An alarm rule from how the CLI spells it (``3/5`` for :class:`MOfN`, ``mean/120`` for :class:`WindowMean`),
    trying every registered kind.

    Raises:
        DecisionError: no kind reads ``text``; the message names what each kind accepts.
    """
    errors = []
    for cls in RULES.values():
        try:
            return cls.parse(text)
        except DecisionError as e:
            errors.append(str(e))
    raise DecisionError("; ".join(errors))


def rule_from_dict(d: dict) -> AlarmRule:
    """An alarm rule from its ``to_dict()`` form, by ``kind``."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in RULES:
        raise DecisionError(f"unknown alarm rule kind {kind!r}; known: {', '.join(RULES)}")
    return RULES[kind].from_dict(d)


@dataclass(frozen=True)
class StreamAlarms:
    """The alarm rule over a stream of normal operation followed by a persistent fault (see :func:`fault_stream`)."""

    normal_patches: int
    fault_patches: int
    false_alarms: int  # alarm onsets during normal operation
    first_alarm: int | None  # patches from the fault's start to the first patch with an alarm active (None: never)
    alarm_share: float  # share of the fault's patches with an alarm active

    def delay_seconds(self, patch_seconds: float) -> float | None:
        """Time from the fault's start to the end of the patch that raised the alarm (None: no alarm)."""
        return None if self.first_alarm is None else (self.first_alarm + 1) * patch_seconds

    def to_dict(self, patch_seconds: float) -> dict:
        return {"normal_patches": self.normal_patches, "fault_patches": self.fault_patches,
                "normal_minutes": self.normal_patches * patch_seconds / 60,
                "fault_minutes": self.fault_patches * patch_seconds / 60,
                "false_alarms": self.false_alarms, "first_alarm_patch": self.first_alarm,
                "delay_s": self.delay_seconds(patch_seconds), "alarm_share": self.alarm_share}


def fault_stream(rule: AlarmRule, normal_scores, fault_scores, threshold: float) -> StreamAlarms:
    """Apply ``rule`` patch by patch (as a monitor does) to normal scores followed by a fault's scores, all in
    recording order: how many alarms normal operation raised, and how soon the fault raised one."""
    state = rule.stream(threshold)
    false_alarms = sum(bool(state.update(float(s))) for s in np.asarray(normal_scores, float))
    active = np.array([(state.update(float(s)), state.active)[1] for s in np.asarray(fault_scores, float)], bool)
    hits = np.flatnonzero(active)
    return StreamAlarms(int(np.asarray(normal_scores).size), int(active.size), int(false_alarms),
                        int(hits[0]) if hits.size else None, float(active.mean()) if active.size else 0.0)
