"""What a frequency band's deviation may mean, in the words of the site's machine type: the one owner of band and
fault words for alarms (``calibration.monitoring.monitor``), the monitor's output and the report.

A site's ``machine`` is free text; :func:`machine_type` finds a known type in it (``"centrifugal pump 3"`` → pump,
``"air compressor"`` → compressor, ``"blower"`` → fan). Each known type names only its own faults (the simulator's
:data:`anomaly.simulate.MACHINE_FAULTS`): a pump's 4 kHz+ band is "cavitation-like", a compressor's is
"valve-leak-like". Any other machine (a toy car, a valve, a conveyor) gets neutral words, the band and its frequency
("high band, 4.0–7.5 kHz"), never another machine's fault names.
"""

from __future__ import annotations

import math
import re

from anomaly.simulate import MACHINE_FAULTS, MACHINES

# Band edges (Hz) shared by every type; the words for each band per machine type.
EDGES = (300.0, 1000.0, 2500.0, 4000.0)
NEUTRAL = ("low band", "low-mid band", "mid band", "upper-mid band", "high band")
WORDS: dict[str, tuple[str, str, str, str, str]] = {
    "pump": ("low band: imbalance, looseness or structure-borne rumble", "blade-pass and flow tones",
             "impacts (loose parts, rubbing)", "bearing-resonance-like band (bearing impacts ring near 3 kHz)",
             "cavitation-like high band (broadband hiss)"),
    "compressor": ("low band: crank imbalance, looseness", "piston and valve tones", "valve clicks, impacts",
                   "bearing-resonance-like band (bearing impacts ring near 3 kHz)",
                   "valve-leak-like high band (hiss)"),
    "fan": ("low band: imbalance, looseness", "blade-pass tones", "rubbing, impacts",
            "bearing-resonance-like band (bearing impacts ring near 3 kHz)", "high band: turbulence, hiss"),
    "motor": ("low band: magnetic hum (twice mains), imbalance", "slot and whine tones", "impacts",
              "bearing-resonance-like band (bearing impacts ring near 3 kHz)", "arc-like high band (crackle, buzz)"),
}
SIGNATURES = {
    "cavitation": "cavitation is broadband hiss strongest above 3–4 kHz",
    "bearing-outer": "bearing impacts ring a resonance near 3 kHz",
    "bearing-inner": "bearing impacts ring a resonance near 3 kHz",
    "compressor-valve-leak": "a leaking valve hisses above 2 kHz",
    "electrical-arc": "an electric arc is a 2–8 kHz buzz that comes and goes",
}
SYNONYMS = {"blower": "fan", "ventilator": "fan", "impeller": "pump"}
assert set(WORDS) == set(MACHINES) == set(MACHINE_FAULTS)


def machine_type(machine: str | None) -> str | None:
    """The known machine type named in a site's free-text ``machine`` (None: unknown, neutral words)."""
    words = re.findall(r"[a-z]+", (machine or "").lower())
    for w in words:
        w1 = w[:-1] if w.endswith("s") else w
        for cand in (w, w1):
            if cand in WORDS:
                return cand
            if cand in SYNONYMS:
                return SYNONYMS[cand]
    return None


def _khz(f: float) -> str:
    return f"{f / 1000:.1f}" if f >= 1000 else f"{f / 1000:.2f}"


def band_index(center_hz: float) -> int:
    return sum(center_hz >= e for e in EDGES)


def band_hint(center_hz: float, machine: str | None = None) -> str:
    """What a deviation at ``center_hz`` may mean for this machine; neutral (band and frequency) for unknown types."""
    i = band_index(center_hz)
    kind = machine_type(machine)
    if kind is not None:
        return WORDS[kind][i]
    lo = ([0.0] + list(EDGES))[i]
    hi = (list(EDGES) + [math.inf])[i]
    rng = f"above {_khz(lo)} kHz" if hi == math.inf else f"under {_khz(hi)} kHz" if lo == 0 else \
        f"{_khz(lo)}–{_khz(hi)} kHz"
    return f"{NEUTRAL[i]} ({rng})"


def fault_words(machine: str | None) -> tuple[str, ...]:
    """The faults this machine type is known for (none for unknown types)."""
    kind = machine_type(machine)
    return MACHINE_FAULTS[kind] if kind else ()


def signature_text(machine: str | None) -> str:
    """A sentence on what this machine's faults sound like, for the report (neutral for unknown types)."""
    faults = fault_words(machine)
    if not faults:
        return ("The machine type is not one humwatch knows faults for, so bands are named by their frequency only; "
                "compare the bars with the calibration's mean and look for what changed at those frequencies.")
    sigs = list(dict.fromkeys(SIGNATURES[f] for f in faults))
    return f"Typical {machine_type(machine)} fault signatures: " + "; ".join(sigs) + \
        "; looseness and imbalance show at the low end."
