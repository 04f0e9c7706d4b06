"""What the simulator simulates: the machines, faults and backgrounds, their physical constants and component
levels, the rendering constants (chunk, wavetable), :class:`BearingGeometry` and :class:`SimConfig`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from anomaly.errors import DataError

SAMPLE_RATE = 16000
MACHINES = ("pump", "compressor", "fan", "motor")
FAULTS = ("none", "cavitation", "bearing-outer", "bearing-inner", "compressor-valve-leak", "electrical-arc")
BACKGROUNDS = ("quiet", "factory", "hvac-cycling")
MACHINE_FAULTS = {
    "pump": ("cavitation", "bearing-outer", "bearing-inner"),
    "compressor": ("compressor-valve-leak", "bearing-outer", "bearing-inner"),
    "fan": ("bearing-outer", "bearing-inner"),
    "motor": ("electrical-arc", "bearing-outer", "bearing-inner"),
}
"""The faults each machine really has (any fault can be mixed into any machine's sound, as an additive stand-in);
their words label bands in alarms and reports (:mod:`anomaly.vocabulary`)."""

MAINS_HZ = 50.0
"""Mains frequency: motor magnetic hum and electrical arcs are locked to ``2 * MAINS_HZ`` (100 Hz)."""

DEFAULT_SHAFT_HZ = {"pump": 29.5, "compressor": 24.5, "fan": 16.2, "motor": 24.7}
"""Shaft (crank) rate per machine when ``SimConfig.shaft_hz`` is None: 1770, 1470, 972 and 1482 rpm."""

SHAFT_HZ_RANGE = (1.0, 200.0)
"""Accepted ``shaft_hz`` (60 to 12000 rpm); outside it the blade-pass and bearing rates stop making sense."""

PUMP_VANES = 6  # impeller vanes: blade-pass at 6x shaft
FAN_BLADES = 9  # fan blades: blade-pass at 9x shaft
MOTOR_ROTOR_BARS = 28  # rotor slots: slot-pass at 28x shaft, with +-2*mains sidebands
MOTOR_FAN_BLADES = 11  # the motor's own cooling fan
FACTORY_DISTANT_HZ = 18.7  # shaft rate of the distant machine in the factory background
HVAC_BLOWER_HZ = 14.8  # shaft rate of the HVAC blower

BEARING_RESONANCE_HZ = 3200.0  # structural resonance rung by each bearing impact
BEARING_RING_S = 1.0e-3  # its amplitude decay time constant (Q ~ 10: rings ~5 ms to -40 dB)
BEARING_JITTER = 0.015  # impact timing jitter, fraction of a period (rolling elements slip)
VALVE_RESONANCE_HZ = 1850.0  # compressor valve-plate / head resonance rung by each valve click
VALVE_RING_S = 2.5e-3

LIMIT_KNEE = 0.8  # the soft limiter is the identity below this |sample| ...
LIMIT_CEILING = 0.98  # ... and never reaches this, so float32 and 16-bit output stay below full scale

# Component levels as RMS in dBFS. A healthy machine sums to about -20 dBFS; fault levels are the RMS of the fault
# component at severity 1 (while active) and scale linearly in amplitude with severity.
_LEVELS = {
    "pump.tones": -22.5, "pump.flow": -24.0,
    "compressor.tones": -21.5, "compressor.clicks": -28.0, "compressor.mech": -30.0,
    "fan.tones": -27.0, "fan.aero": -21.0,
    "motor.hum": -23.5, "motor.shaft": -27.0, "motor.slot": -33.0, "motor.noise": -31.0,
    "quiet.room": -50.0,
    "factory.room": -34.0, "factory.machinery": -38.0, "factory.impacts": -44.0,
    "hvac.room": -48.0, "hvac.rumble": -30.0, "hvac.blower": -36.0,
    "cavitation": -28.0, "bearing": -28.0, "leak.hiss": -30.0, "electrical-arc": -28.0,
}

_CHUNK = SAMPLE_RATE  # rendering unit (samples); filter warm-ups must fit in one chunk
_TABLE = 8192  # wavetable length (linear interpolation error < 0.1 % up to the 100th harmonic)
_GROUP = 1024  # indexed random values are drawn in groups of this many per SeedSequence
_KEY_OFFSET = 1 << 32  # spawn keys must be >= 0; chunk -1 (the warm-up of chunk 0) is a valid index
_N = np.arange(_CHUNK, dtype=np.int64)
_NF = _N.astype(np.float64)


@dataclass(frozen=True)
class BearingGeometry:
    """Rolling-element bearing geometry (defaults: a 6205-type deep-groove ball bearing)."""

    n_balls: int = 9
    ball_diameter_mm: float = 7.94
    pitch_diameter_mm: float = 39.04
    contact_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.n_balls, int) and self.n_balls >= 1):
            raise DataError(f"bearing n_balls must be a positive integer, got {self.n_balls!r}")
        if not (0 < self.ball_diameter_mm < self.pitch_diameter_mm):
            raise DataError(
                f"bearing ball diameter {self.ball_diameter_mm!r} mm must be > 0 and below the pitch diameter "
                f"{self.pitch_diameter_mm!r} mm"
            )
        if not (0 <= self.contact_angle_deg < 90):
            raise DataError(f"bearing contact angle {self.contact_angle_deg!r} deg must be in [0, 90)")

    def _ratio(self) -> float:
        return self.ball_diameter_mm / self.pitch_diameter_mm * math.cos(math.radians(self.contact_angle_deg))

    def bpfo(self, shaft_hz: float) -> float:
        """Ball-pass frequency, outer race: ``n/2 * f * (1 - d/D cos a)``."""
        return self.n_balls / 2 * shaft_hz * (1 - self._ratio())

    def bpfi(self, shaft_hz: float) -> float:
        """Ball-pass frequency, inner race: ``n/2 * f * (1 + d/D cos a)``."""
        return self.n_balls / 2 * shaft_hz * (1 + self._ratio())


def _choice(kind: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise DataError(f"unknown {kind} {value!r}; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Validated on construction (raises DataError with a one-line message)."""

    machine: str = "pump"
    fault: str = "none"
    severity: float = 0.0  # 0 = healthy (the fault adds nothing), 1 = obvious
    background: str = "quiet"
    seed: int = 0
    shaft_hz: float | None = None  # None -> DEFAULT_SHAFT_HZ[machine]
    bearing: BearingGeometry = BearingGeometry()

    def __post_init__(self) -> None:
        _choice("machine", self.machine, MACHINES)
        _choice("fault", self.fault, FAULTS)
        _choice("background", self.background, BACKGROUNDS)
        try:
            severity = float(self.severity)
        except (TypeError, ValueError):
            raise DataError(f"severity must be a number in [0, 1], got {self.severity!r}") from None
        if not 0.0 <= severity <= 1.0:  # also rejects NaN
            raise DataError(f"severity {self.severity!r} is outside [0, 1]")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.shaft_hz is not None:
            lo, hi = SHAFT_HZ_RANGE
            try:
                shaft = float(self.shaft_hz)
            except (TypeError, ValueError):
                raise DataError(f"shaft_hz must be a number, got {self.shaft_hz!r}") from None
            if not lo <= shaft <= hi:
                raise DataError(f"shaft_hz {self.shaft_hz!r} is outside [{lo:g}, {hi:g}] Hz")
            object.__setattr__(self, "shaft_hz", shaft)
        if not isinstance(self.bearing, BearingGeometry):
            raise DataError(f"bearing must be a BearingGeometry, got {type(self.bearing).__name__}")
        # Normalise types so that equal configs compare and hash equal (the wavetables are cached on these values).
        object.__setattr__(self, "severity", severity)
        object.__setattr__(self, "seed", int(self.seed))

    @property
    def effective_shaft_hz(self) -> float:
        """The shaft (crank) rate in use: ``shaft_hz`` or the machine's default."""
        return self.shaft_hz if self.shaft_hz is not None else DEFAULT_SHAFT_HZ[self.machine]
