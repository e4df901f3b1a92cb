"""configure.py's machinery: options, host probes, rendering and installation."""
