"""Depth evaluation: standard metrics, protocols and reports."""
