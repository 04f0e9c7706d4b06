"""Deterministic, physically motivated synthetic machine sound at 16 kHz mono.

The simulator builds a recording as ``soft_limit(machine + background + fault)``:

* **machine** – shaft-locked tones (rendered from one-period wavetables, so hundreds of harmonics cost one table
  look-up per sample), broadband noise shaped by fixed filters, and crank-locked valve clicks (compressor);
* **background** – room noise, distant machinery and impacts (factory) or a cycling HVAC rumble, all under a slow
  level drift;
* **fault** – an additive component; :func:`fault_signal` returns exactly that component, so faults can also be
  injected into real recordings.

Everything is rendered in fixed one-second *chunks*, each a pure function of ``(config, chunk index)``: random numbers
come from ``numpy.random.SeedSequence(seed, spawn_key=(stream, index))``, filters are warmed up on the previous
chunk's noise, and events that ring across a chunk edge are drawn from both neighbouring chunks. Any block size,
and any start offset, therefore gives bit-identical samples. See ``docs/simulator.md`` for the physics and every
parameter.

The package, one module per concern (every name is importable from ``anomaly.simulate`` as before): ``config``
(machines, faults, constants, SimConfig), ``streams`` (indexed random streams), ``filters`` and ``tables`` (fixed
filters, wavetables), ``events`` (impulses, locked and Poisson events), ``parts`` (machine and background
components), ``faults`` (fault components, injection descriptions), ``render`` (chunks, blocks, the entry points).
"""

from anomaly.simulate.config import (
    BACKGROUNDS,
    BEARING_JITTER,
    BEARING_RESONANCE_HZ,
    BEARING_RING_S,
    DEFAULT_SHAFT_HZ,
    FACTORY_DISTANT_HZ,
    FAN_BLADES,
    FAULTS,
    HVAC_BLOWER_HZ,
    LIMIT_CEILING,
    LIMIT_KNEE,
    MACHINE_FAULTS,
    MACHINES,
    MAINS_HZ,
    MOTOR_FAN_BLADES,
    MOTOR_ROTOR_BARS,
    PUMP_VANES,
    SAMPLE_RATE,
    SHAFT_HZ_RANGE,
    VALVE_RESONANCE_HZ,
    VALVE_RING_S,
    BearingGeometry,
    SimConfig,
)
from anomaly.simulate.faults import describe_injection, injection_machine
from anomaly.simulate.parts import HVAC_CYCLE_S, background_drift_db, hvac_gate
from anomaly.simulate.render import _soft_limit as _soft_limit  # bench/sim_fleet.py limits its mixes the same way
from anomaly.simulate.render import fault_signal, iter_simulate, simulate, write_audio

__all__ = [
    "BACKGROUNDS", "BEARING_JITTER", "BEARING_RESONANCE_HZ", "BEARING_RING_S", "DEFAULT_SHAFT_HZ",
    "FACTORY_DISTANT_HZ", "FAN_BLADES", "FAULTS", "HVAC_BLOWER_HZ", "HVAC_CYCLE_S", "LIMIT_CEILING", "LIMIT_KNEE",
    "MACHINES", "MACHINE_FAULTS", "MAINS_HZ", "MOTOR_FAN_BLADES", "MOTOR_ROTOR_BARS", "PUMP_VANES", "SAMPLE_RATE",
    "SHAFT_HZ_RANGE", "VALVE_RESONANCE_HZ", "VALVE_RING_S", "BearingGeometry", "SimConfig", "background_drift_db",
    "describe_injection", "fault_signal", "hvac_gate", "injection_machine", "iter_simulate", "simulate", "write_audio",
]
