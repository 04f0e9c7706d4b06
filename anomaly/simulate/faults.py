"""The faults: each fault's additive component (:func:`_fault_parts`), and what an injection of simulated faults into
a site's audio is (:func:`injection_machine`, :func:`describe_injection`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from anomaly.simulate.config import (
    _CHUNK,
    _LEVELS,
    _TABLE,
    BEARING_JITTER,
    BEARING_RESONANCE_HZ,
    FAN_BLADES,
    MACHINES,
    MAINS_HZ,
    PUMP_VANES,
    SAMPLE_RATE,
    SimConfig,
)
from anomaly.simulate.events import _db, _locked_events, _poisson_envelope, _ring, _shot_rms, _split_power
from anomaly.simulate.filters import _filters
from anomaly.simulate.parts import _Part
from anomaly.simulate.streams import _indexed, _knots, _Rand, _rng
from anomaly.simulate.tables import _COS_TABLE, _compressor_tables, _periodic


def _modulation_hz(cfg: SimConfig) -> float:
    # Cavitation collapses where pressure is lowest, which sweeps past with every vane (pump) or blade (fan).
    f = cfg.effective_shaft_hz
    return f * {"pump": PUMP_VANES, "fan": FAN_BLADES}.get(cfg.machine, 1)


def _fault_parts(cfg: SimConfig) -> list[_Part]:
    s, seed, f, F = cfg.severity, cfg.seed, cfg.effective_shaft_hz, _filters()
    if cfg.fault == "none" or s == 0.0:
        return []
    const = _rng(seed, f"fault.{cfg.fault}.const", 0).random(4)  # per-seed phases of the fault's periodicities

    if cfg.fault == "cavitation":
        rate = 800.0 * s  # bursts per second grow with severity ...
        sigma = 0.3  # ... and so does their (log-normal) amplitude, via the level normalisation below
        env = F["cavitation.env"]
        depth, fm = 0.4, _modulation_hz(cfg)
        gain = s * _db(_LEVELS["cavitation"]) / _shot_rms(env, rate, math.exp(sigma**2 / 2), math.exp(2 * sigma**2))
        gain /= math.sqrt(1 + depth**2 / 2)
        amp_fn = lambda g, m: g.lognormal(0.0, sigma, m)  # noqa: E731

        def cavitation(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
            e = _poisson_envelope(seed, "fault.cavitation.events", rate, amp_fn, env, k)
            e *= 1 + depth * _periodic(_COS_TABLE, fm, n, const[0])
            return rand.colored("fault.cavitation.carrier", F["hp1k"], k) * e * gain

        return [cavitation]

    if cfg.fault in ("bearing-outer", "bearing-inner"):
        inner = cfg.fault == "bearing-inner"
        rate = cfg.bearing.bpfi(f) if inner else cfg.bearing.bpfo(f)
        res = F["bearing.res"]
        amp_jitter = 0.2
        # Inner race: the defect rides on the shaft and is loaded once per revolution -> AM at the shaft rate.
        m_dc, m_ac = (0.6, 0.4) if inner else (1.0, 0.0)
        power = (rate / SAMPLE_RATE * (1 + amp_jitter**2) * (m_dc**2 + m_ac**2 / 2) * res.energy
                 * _split_power(BEARING_RESONANCE_HZ))
        gain = s * _db(_LEVELS["bearing"]) / math.sqrt(power)

        def bearing(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
            w0, w1 = k * _CHUNK - res.warm, (k + 1) * _CHUNK
            times, amp, _ = _locked_events(seed, f"fault.{cfg.fault}", rate, (0.0,), float(const[0]),
                                           BEARING_JITTER, amp_jitter, w0, w1)
            if inner:
                amp = amp * (m_dc + m_ac * np.cos(2 * np.pi * (np.mod(times * (f / SAMPLE_RATE), 1.0) + const[1])))
            return _ring(res, k, times, amp) * gain

        return [bearing]

    if cfg.fault == "compressor-valve-leak":
        # Hiss of gas forced back through the leaking valve; the leak flow follows the cylinder pressure, so it
        # swells once per revolution. Plus the change of the compressor's pulsation pattern (see _compressor_tables),
        # laid at this machine's shaft rate whatever the machine is (an additive stand-in on non-compressors).
        _, delta = _compressor_tables(seed, f, s)
        tone_gain = _db(_LEVELS["compressor.tones"])
        depth = 0.3
        hiss_gain = s * _db(_LEVELS["leak.hiss"]) / math.sqrt((1 - depth) ** 2 + depth**2 / 2)

        def leak(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
            mod = (1 - depth) + depth * _periodic(_COS_TABLE, f, n, const[0])
            hiss = rand.colored("fault.leak.hiss", F["hp2k"], k) * mod * hiss_gain
            return hiss + _periodic(delta, f, n) * tone_gain

        return [leak]

    # electrical-arc: the arc re-strikes every half mains cycle near the voltage peak -> 2x mains AM of a
    # 2-8 kHz buzz; it is intermittent (episodes come and go) and its duty rises with severity.
    duty = 0.25 + 0.5 * s
    p_strike = 0.8
    shape = np.sin(np.pi * np.arange(_TABLE + 1) / _TABLE) ** 8  # envelope within each half cycle, peaky
    mean_shape2 = math.prod(range(15, 0, -2)) / math.prod(range(16, 0, -2))  # E[shape^2] = E[sin^16]
    mean_amp2 = p_strike * (0.16 + 0.24 + 0.12)  # E[(0.4 + 0.6 u)^2] for u ~ U(0, 1)
    gain = s * _db(_LEVELS["electrical-arc"]) / math.sqrt(mean_shape2 * mean_amp2)

    def arc(rand: _Rand, k: int, n: np.ndarray, t: np.ndarray) -> np.ndarray:
        gate = np.clip((duty - _knots(seed, "fault.arc.gate", 0.25, n, normal=False)) / 0.08, 0.0, 1.0)
        if not gate.any():
            return np.zeros(_CHUNK)
        # Half cycle h of the mains strikes with probability p_strike and a random strength.
        h = np.floor(n * (2 * MAINS_HZ / SAMPLE_RATE)).astype(np.int64)
        h0 = int(h[0])
        u = _indexed(seed, "fault.arc.strikes", h0, int(h[-1]) + 1, 2)
        strike = (u[:, 0] < p_strike) * (0.4 + 0.6 * u[:, 1])
        env = _periodic(shape, 2 * MAINS_HZ, n) * strike[h - h0] * gate
        return rand.colored("fault.arc.carrier", F["hp2k"], k) * env * gain

    return [arc]


def injection_machine(machine: str | None) -> str:
    """The simulated machine whose faults are injected into a site's audio: the site's own type when the simulator
    models it (:data:`MACHINES`), else a pump."""
    return machine if machine in MACHINES else "pump"


def describe_injection(machine: str | None, faults: Sequence[str], severities: Sequence[float] = ()) -> dict:
    """What an injection of simulator faults into a site's audio is, in words a report can show beside its figures.

    ``machine`` is the site's machine type (``None`` or ``""`` when unknown). The result says which faults were
    injected and which machine they model, and carries a ``warning`` when that is not the site's machine: the
    figures then show that the model reacts to added sounds, not how well it detects this machine's real faults.
    """
    sim = injection_machine(machine)
    modelled = machine in MACHINES
    faults = [f for f in faults if f != "none"]
    sev = f" at severity {', '.join(f'{x:g}' for x in severities)}" if severities else ""
    text = f"simulated {sim} faults ({', '.join(faults)}){sev} mixed into the site's held-out normal audio"
    if modelled:
        warning = None
    else:
        what = f"machine type {machine!r}" if machine else "an unknown machine type (no site machine given)"
        warning = (f"{what} is not one the simulator models ({', '.join(MACHINES)}): these are simulated {sim} "
                   "faults, so their figures show that the model reacts to added fault sounds, not how well it "
                   "detects real faults of this machine; check detection on labelled recordings of it "
                   "(--validate-with DIR with normal_*/anomaly_* clips)")
    return {"faults": faults, "simulated_machine": sim, "site_machine": machine or None, "machine_modelled": modelled,
            "description": text, "warning": warning}
