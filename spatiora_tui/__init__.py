"""Spatiora TUI: Stable Diffusion design work from a terminal, one warm model, task modes as LoRA sets."""

__version__ = "0.1.0"
