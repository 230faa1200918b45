"""The user's model library: checkpoints, LoRAs and embeddings as files, before any is loaded.

Reads .safetensors headers, tells what a file is (and why it cannot be used), hashes files as
AUTOMATIC1111 does, and finds them in the user's folders, including an existing AUTOMATIC1111,
Forge, SD.Next or ComfyUI install. No torch, no textual: `spatiora models` answers in a moment.
"""
