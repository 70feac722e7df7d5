"""The Jetson on-device benchmark: ``python -m benchmarks.jetson BUNDLE`` (see ``__main__``)."""
