"""C reference of the front end (``hw_frontend.c/.h``) and of the classifier's decision (``hw_classifier.c/.h``),
and their test harnesses; the sources are copied into every export (the classifier's only with a classifier)."""

from pathlib import Path

DIR = Path(__file__).resolve().parent
SOURCES = ("hw_frontend.h", "hw_frontend.c")
HARNESS = "hw_frontend_main.c"
CLASSIFIER_SOURCES = ("hw_classifier.h", "hw_classifier.c")
CLASSIFIER_HARNESS = "hw_classifier_main.c"
