"""The engine: the only package that imports torch, diffusers and peft.

Nothing heavy is imported here; the UI imports `spatiora_tui.engine.api` alone, and the real
engine (`spatiora_tui.engine.local.LocalEngine`) imports torch when it is constructed.
"""
