"""Baseline against fault phases: per-layer added latency, significance, the absorbing layer."""
