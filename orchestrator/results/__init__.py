"""Drivers that apply `analysis/` to a sweep dir and write what it learns: the front and report, the
geometry, rewinding, and exported adapters."""
