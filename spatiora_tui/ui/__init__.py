"""The Textual application. Textual only: it never imports torch, diffusers, peft or pynvml.

It talks to the engine through spatiora_tui.engine.api (dataclasses and the Engine protocol),
and to the hardware through spatiora_tui.hw snapshots.
"""
