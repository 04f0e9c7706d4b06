"""The machine and background components: each is ``fn(rand, k, n, t) -> float64 chunk``, with ``n`` absolute sample
indices and ``t = n / SAMPLE_RATE``; the HVAC cycle and the background level drift."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from anomaly.simulate.config import (
    _CHUNK,
    _LEVELS,
    _NF,
    FACTORY_DISTANT_HZ,
    HVAC_BLOWER_HZ,
    MAINS_HZ,
    MOTOR_ROTOR_BARS,
    SAMPLE_RATE,
    VALVE_RESONANCE_HZ,
    SimConfig,
)
from anomaly.simulate.events import _db, _locked_events, _poisson_envelope, _ring, _shot_rms, _split_power
from anomaly.simulate.filters import _Filter, _filters
from anomaly.simulate.streams import _indexed, _knots, _Rand, _rng
from anomaly.simulate.tables import (
    _BLOWER_ORDERS,
    _DISTANT_ORDERS,
    _FAN_ORDERS,
    _MOTOR_HUM_ORDERS,
    _MOTOR_SHAFT_ORDERS,
    _PUMP_ORDERS,
    _compressor_tables,
    _periodic,
    _tone_table,
)

_Part = Callable[[_Rand, int, np.ndarray, np.ndarray], np.ndarray]


def _tone(table: np.ndarray, freq_hz: float, gain: float) -> _Part:
    return lambda rand, k, n, t: _periodic(table, freq_hz, n) * gain


def _noise(stream: str, filt: _Filter, gain: float, mod_depth: float = 0.0, mod_spacing_s: float = 1.0) -> _Part:
    def part(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
        x = rand.colored(stream, filt, k) * gain
        if mod_depth:  # slow random level modulation (turbulence, flow changes)
            x *= np.maximum(1 + mod_depth * _knots(rand.seed, stream + ".mod", mod_spacing_s, n), 0.0)
        return x

    return part


def _machine_parts(cfg: SimConfig) -> list[_Part]:
    f, seed, F = cfg.effective_shaft_hz, cfg.seed, _filters()
    L = {key: _db(v) for key, v in _LEVELS.items()}
    if cfg.machine == "pump":
        return [
            _tone(_tone_table(seed, "pump", f, _PUMP_ORDERS), f, L["pump.tones"]),
            _noise("pump.flow", F["pump.flow"], L["pump.flow"], 0.15, 0.4),
        ]
    if cfg.machine == "compressor":
        healthy, _ = _compressor_tables(seed, f, 0.0)
        clicks = F["valve.res"]
        # Per revolution: suction and discharge valve of cylinder 1, then of cylinder 2 (discharge is louder).
        slots, slot_amp = (0.06, 0.36, 0.56, 0.86), np.array([0.6, 1.0, 0.55, 0.95])
        click_power = f * len(slots) / SAMPLE_RATE * np.mean(slot_amp**2) * (1 + 0.1**2)
        click_gain = L["compressor.clicks"] / math.sqrt(click_power * clicks.energy * _split_power(VALVE_RESONANCE_HZ))
        phase0 = float(_rng(seed, "compressor.clicks.phase", 0).random())

        def valve_clicks(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
            w0, w1 = k * _CHUNK - clicks.warm, (k + 1) * _CHUNK
            times, amp, which = _locked_events(seed, "compressor.clicks", f, slots, phase0, 0.002, 0.1, w0, w1)
            return _ring(clicks, k, times, amp * slot_amp[which]) * click_gain

        return [
            _tone(healthy, f, L["compressor.tones"]),
            valve_clicks,
            _noise("compressor.mech", F["compressor.mech"], L["compressor.mech"]),
        ]
    if cfg.machine == "fan":
        return [
            _tone(_tone_table(seed, "fan", f, _FAN_ORDERS), f, L["fan.tones"]),
            _noise("fan.aero", F["fan.aero"], L["fan.aero"], 0.12, 0.25),
        ]
    # motor: magnetic hum at 2x mains, shaft harmonics (incl. the cooling fan), rotor-slot tones, light noise.
    slot_pass = MOTOR_ROTOR_BARS * f
    slot_freqs = np.array([slot_pass - 2 * MAINS_HZ, slot_pass, slot_pass + 2 * MAINS_HZ])
    slot_amps = np.array([1.0, 0.5, 1.0])
    ok = slot_freqs < 0.45 * SAMPLE_RATE
    slot_freqs, slot_amps = slot_freqs[ok], slot_amps[ok]
    slot_amps = slot_amps / math.sqrt(max(np.sum(slot_amps**2) / 2, 1e-12)) * L["motor.slot"]
    slot_phase = _rng(seed, "identity.motor.slot", 0).uniform(0, 2 * np.pi, 3)[: len(slot_freqs)]
    w = 2 * np.pi * slot_freqs / SAMPLE_RATE
    # These tones are not shaft harmonics, so no shared wavetable: a chunk of each is cos(w m + p) =
    # cos(p) cos(w m) - sin(p) sin(w m) with the chunk's start phase p and fixed cos/sin arrays over m.
    cos_wm, sin_wm = np.cos(np.outer(w, _NF)), np.sin(np.outer(w, _NF))

    def slot_tones(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
        p = np.fmod(w * float(n[0]), 2 * np.pi) + slot_phase
        return (slot_amps * np.cos(p)) @ cos_wm - (slot_amps * np.sin(p)) @ sin_wm

    return [
        _tone(_tone_table(seed, "motor.hum", MAINS_HZ, _MOTOR_HUM_ORDERS), MAINS_HZ, L["motor.hum"]),
        _tone(_tone_table(seed, "motor.shaft", f, _MOTOR_SHAFT_ORDERS), f, L["motor.shaft"]),
        slot_tones,
        _noise("motor.noise", F["motor.noise"], L["motor.noise"]),
    ]


def _background_parts(cfg: SimConfig) -> list[_Part]:
    seed, F = cfg.seed, _filters()
    L = {key: _db(v) for key, v in _LEVELS.items()}
    if cfg.background == "quiet":
        return [_noise("bg.room", F["pink"], L["quiet.room"])]
    if cfg.background == "factory":
        distant = _tone_table(seed, "bg.distant", FACTORY_DISTANT_HZ, _DISTANT_ORDERS)
        env = F["impact.env"]
        rate = 0.3
        amp_fn = lambda g, m: g.uniform(0.3, 1.0, m)  # noqa: E731
        impact_gain = L["factory.impacts"] / _shot_rms(env, rate, 0.65, (1 - 0.3**3) / (3 * 0.7))

        def machinery(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
            # A distant machine that starts and stops: on when a slow random curve is high, with ~10 s fades.
            v = _knots(seed, "bg.distant.gate", 20.0, n)
            gate = np.clip(0.5 + 1.5 * v, 0.0, 1.0)
            return _periodic(distant, FACTORY_DISTANT_HZ, n) * (gate * L["factory.machinery"])

        def impacts(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
            e = _poisson_envelope(seed, "bg.impacts", rate, amp_fn, env, k)
            return rand.colored("bg.impacts.carrier", F["impact"], k) * e * impact_gain

        return [_noise("bg.room", F["pink"], L["factory.room"]), machinery, impacts]
    blower = _tone_table(seed, "bg.blower", HVAC_BLOWER_HZ, _BLOWER_ORDERS)

    def hvac(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
        g = hvac_gate(seed, t)
        if not g.any():
            return np.zeros(_CHUNK)
        rumble = rand.colored("bg.hvac.rumble", F["rumble"], k) * L["hvac.rumble"]
        return (rumble + _periodic(blower, HVAC_BLOWER_HZ, n) * L["hvac.blower"]) * g

    return [_noise("bg.room", F["pink"], L["hvac.room"]), hvac]


HVAC_CYCLE_S = 240.0  # one thermostat cycle slot: the unit runs once per slot
_HVAC_START = (10.0, 70.0)  # switch-on time within the slot (s, uniform)
_HVAC_ON = (60.0, 150.0)  # run time (s, uniform)
_HVAC_RAMP = (3.0, 8.0)  # spin-up / spin-down time (s, uniform)


def hvac_gate(seed: int, t: np.ndarray) -> np.ndarray:
    """HVAC on/off gain in [0, 1] at times t (s): one run per 240 s slot, with raised-cosine ramps of 3-8 s."""
    j = np.floor(t / HVAC_CYCLE_S).astype(np.int64)
    j0 = int(j.min()) if len(j) else 0
    u = _indexed(seed, "bg.hvac.cycle", j0, int(j.max()) + 1 if len(j) else 0, 3)[j - j0]
    start = _HVAC_START[0] + (_HVAC_START[1] - _HVAC_START[0]) * u[:, 0]
    on = _HVAC_ON[0] + (_HVAC_ON[1] - _HVAC_ON[0]) * u[:, 1]
    ramp = _HVAC_RAMP[0] + (_HVAC_RAMP[1] - _HVAC_RAMP[0]) * u[:, 2]
    tau = t - j * HVAC_CYCLE_S
    x = np.clip(np.minimum(tau - start, start + on - tau) / ramp, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def background_drift_db(seed: int, t: np.ndarray) -> np.ndarray:
    """Slow background level drift in dB at times t (s): +-1.5 dB knots every 4 min plus +-0.5 dB every 40 s."""
    n = np.asarray(t) * SAMPLE_RATE
    return 1.5 * _knots(seed, "bg.drift.slow", 240.0, n) + 0.5 * _knots(seed, "bg.drift.fast", 40.0, n)
