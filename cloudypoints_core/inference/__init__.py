"""Inference: model packages, backends, and the one facade every caller uses."""
