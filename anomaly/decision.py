"""How a patch score becomes an alarm: the one owner of the threshold rule, the alarm rule and their defaults.

Everything that sets a threshold or applies an alarm rule calls this module: the detectors' provisional threshold
(:mod:`anomaly.detectors`), calibration and its certificate (:mod:`calibration.calibrate`,
:mod:`calibration.threshold`), the site store's defaults (:mod:`calibration.store`), monitoring, the firmware export
and the constants of the C headers it generates (:mod:`firmware_export.c_arrays`). Changing a default here changes it
everywhere.

* **Threshold rule**: ``mean + k·σ`` of normal patch scores, σ the sample standard deviation (ddof = 1); k in
  ``K_RANGE`` (3…5), default ``DEFAULT_K``. A patch is *over* when its score is strictly greater than the threshold
  (:func:`over`).
* **Alarm rule**: a small frozen value object. :class:`MOfN` raises an alarm when at least ``m`` of the last ``n``
  patches are over the threshold; ``DEFAULT_RULE`` is 3 of 5. A rule works on *scores and a threshold* (not only on
  boolean exceedances), so that rules which integrate the scores over a window can stand next to it: every rule has
  ``kind``, ``onsets(scores, threshold)`` (where alarms start, for a whole sequence), ``stream(threshold)`` (a state
  whose ``update(score)`` returns True at an onset), ``to_dict()``, ``describe()`` and ``c_defines(prefix)`` (the
  constants of the generated C headers). :func:`rule_from_dict` reads any of them back by its ``kind``.

The analytic false-alarm figures of the m-of-n rule (its onset probability, clustering) are the certificate's, in
:mod:`calibration.threshold`; it replays sequences through the rule object.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from anomaly.errors import DecisionError

DEFAULT_K = 4.0
K_RANGE = (3.0, 5.0)
MAX_WINDOW = 60  # the longest alarm window (patches) a site may use; the C state holds one byte per patch of it
DEFAULT_MIN_MINUTES = 30.0  # the least calibration audio the threshold's tail is estimated from, unless --min-minutes
# lowers it or --force accepts less (both are marked on the certificate)


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


# -- alarm rules -------------------------------------------------------------------------------------------------------
class RuleState(Protocol):
    """A rule applied patch by patch (what a monitor holds)."""

    active: bool

    def update(self, score: float) -> bool:
        """Add one patch's score; True when an alarm starts at this patch."""


class AlarmRule(Protocol):
    """What every alarm rule provides (see the module docstring)."""

    kind: ClassVar[str]

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
        on = count >= self.m
        return np.flatnonzero(on & ~np.r_[False, on[:-1]])

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


RULES: dict[str, type] = {MOfN.kind: MOfN}
DEFAULT_RULE = MOfN(3, 5)


def parse_rule(text: str) -> AlarmRule:
    """An alarm rule from how the CLI spells it (``3/5`` for :class:`MOfN`), trying every registered kind.

    Raises:
        DecisionError: no kind reads ``text``; the message names what each kind accepts.
    """
    errors = []
    for cls in RULES.values():
        try:
            return cls.parse(text)
        except DecisionError as e:
            errors.append(str(e))
    raise DecisionError("; ".join(errors) if len(errors) > 1 else errors[0])


def rule_from_dict(d: dict) -> AlarmRule:
    """An alarm rule from its ``to_dict()`` form, by ``kind``."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in RULES:
        raise DecisionError(f"unknown alarm rule kind {kind!r}; known: {', '.join(RULES)}")
    return RULES[kind].from_dict(d)
