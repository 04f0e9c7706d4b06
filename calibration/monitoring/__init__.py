"""Monitoring a calibrated site: every patch scored against its threshold, the alarm rule applied, every raw score
logged.

* :mod:`calibration.monitoring.monitor`: the :class:`~calibration.monitoring.monitor.Monitor` (files or any stream of
  16 kHz blocks in; alarms to ``alarms.jsonl``, the score log and ``--on-alarm``);
* :mod:`calibration.monitoring.scorelog`: the crash-safe SQLite log of every raw score, and its readers;
* :mod:`calibration.monitoring.mic`: sound-card input (PortAudio): live blocks for the monitor, and recordings for
  calibration.
"""
