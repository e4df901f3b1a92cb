#!/usr/bin/env python3
"""Probe this host and generate qmail-scanner-queue.py (run ./configure.py --help)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))

from qsconfigure.cli import main

if __name__ == "__main__":
    sys.exit(main())
