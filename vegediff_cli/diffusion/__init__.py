"""Diffusion maths: noise schedules, samplers and the training loss (torch only)."""
