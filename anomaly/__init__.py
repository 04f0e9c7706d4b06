"""humwatch anomaly core: front end, audio input, simulator, model, training, scoring, evaluation."""

__version__ = "0.1.0"
