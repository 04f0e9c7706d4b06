"""Band and fault words follow the site's machine type (anomaly.vocabulary); unknown types get neutral words."""

from __future__ import annotations

import pytest

from anomaly.simulate import FAULTS, MACHINE_FAULTS, MACHINES
from anomaly.vocabulary import WORDS, band_hint, fault_words, machine_type, signature_text

FAULT_WORDS = ("cavitation", "arc", "valve", "leak", "bearing", "blade")


@pytest.mark.parametrize("text,kind", [("pump", "pump"), ("Centrifugal PUMP 3 <b>", "pump"),
                                       ("air compressor", "compressor"), ("roof blower", "fan"), ("fans", "fan"),
                                       ("motor 7", "motor"), ("ToyCar", None),
                                       ("toy car", None), ("valve", None), ("", None), (None, None),
                                       ("pumpkin press", None)])
def test_machine_type(text, kind):
    assert machine_type(text) == kind


def test_every_simulator_machine_has_words_and_only_its_faults():
    assert set(WORDS) == set(MACHINES)
    for m, faults in MACHINE_FAULTS.items():
        assert set(faults) <= set(FAULTS) - {"none"}
        assert fault_words(m) == faults
    assert "cavitation" in band_hint(6000, "pump") and "valve-leak" in band_hint(6000, "compressor")
    assert "arc" in band_hint(6000, "motor") and "cavitation" not in band_hint(6000, "motor")
    assert "bearing" in band_hint(3000, "fan")


@pytest.mark.parametrize("machine", ["ToyCar", "valve", "conveyor belt", ""])
@pytest.mark.parametrize("hz", [100, 500, 1500, 3000, 6000])
def test_unknown_machines_get_band_and_frequency_only(machine, hz):
    words = band_hint(hz, machine)
    assert "band" in words and "kHz" in words
    assert not any(w in words for w in FAULT_WORDS), words


def test_signature_text():
    assert "cavitation" in signature_text("pump") and "arc" not in signature_text("pump")
    assert "arc" in signature_text("motor") and "cavitation" not in signature_text("motor")
    neutral = signature_text("ToyCar")
    assert not any(w in neutral for w in FAULT_WORDS) and "frequency" in neutral
