"""The real qmail test bed: notqmail and simscan built from the shared vendor sources, run on loopback."""
