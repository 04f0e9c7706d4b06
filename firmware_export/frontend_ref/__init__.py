"""C reference of the front end (``hw_frontend.c/.h``) and its test harness; copied into every export."""

from pathlib import Path

DIR = Path(__file__).resolve().parent
SOURCES = ("hw_frontend.h", "hw_frontend.c")
HARNESS = "hw_frontend_main.c"
