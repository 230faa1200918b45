"""The CLIP tokenizer of every Stable Diffusion model, built offline from the shipped merges.

SD 1.x (CLIP-L), SD 2.x (OpenCLIP-H) and SDXL (CLIP-L + OpenCLIP-bigG) all tokenize with OpenAI's
CLIP byte-level BPE. A single-file checkpoint carries no tokenizer, and diffusers would fetch one
from the Hugging Face hub; Spatiora ships the BPE merges instead (configs/clip/merges.txt.gz, made
by tools/build_clip_tokenizer.py from OpenAI's MIT-licensed file) and derives the vocabulary from
them, exactly as OpenAI's simple_tokenizer does. The derived vocab.json and merges.txt are byte for
byte those of openai/clip-vit-large-patch14 (checked by the build script and a test).

The tokenizers differ only in padding: CLIP-L pads with <|endoftext|>, OpenCLIP with "!" (id 0).
"""

from __future__ import annotations

import functools
import gzip
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parent / "configs"
MERGES_FILE = CONFIGS / "clip" / "merges.txt.gz"
#: sha256 of the vocab.json / merges.txt that transformers reads for openai/clip-vit-large-patch14.
VOCAB_SHA256 = "e089ad92ba36837a0d31433e555c8f45fe601ab5c221d4f607ded32d9f7a4349"
MERGES_SHA256 = "9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
#: The text encoders read 77 tokens: <|startoftext|>, 75 tokens of prompt, <|endoftext|>.
MAX_LENGTH = 77
#: Padding per text encoder: CLIP-L pads with the end token, OpenCLIP (SD 2.x, SDXL's second
#: encoder) with "!".
PAD_CLIP_L, PAD_OPEN_CLIP = EOS, "!"


def bytes_to_unicode() -> list[str]:
    """The byte-level alphabet of GPT-2/CLIP BPE: 256 printable stand-ins for the 256 bytes, in
    byte order of the printable ones first (that order is the vocabulary's first 256 ids)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def vocabulary(merges: Sequence[tuple[str, str]]) -> list[str]:
    """Token strings in id order: bytes, bytes ending a word, one per merge, the two specials."""
    alphabet = bytes_to_unicode()
    return [*alphabet, *(c + "</w>" for c in alphabet), *(a + b for a, b in merges), BOS, EOS]


def vocab_text(merges: Sequence[tuple[str, str]]) -> str:
    """vocab.json as transformers writes it (sorted keys, indent 2, UTF-8)."""
    encoder = {token: i for i, token in enumerate(vocabulary(merges))}
    return json.dumps(encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def merges_text(merges: Sequence[tuple[str, str]]) -> str:
    return "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)


@functools.lru_cache(maxsize=1)
def shipped_merges() -> tuple[tuple[str, str], ...]:
    """The CLIP merges shipped with Spatiora."""
    lines = gzip.decompress(MERGES_FILE.read_bytes()).decode("utf-8").splitlines()
    return tuple(tuple(line.split(" ", 1)) for line in lines[1:])  # type: ignore[misc]


@functools.lru_cache(maxsize=1)
def _tokenizer_files() -> tuple[str, str]:
    """vocab.json and merges.txt, written once per process to a folder removed at exit.

    Deriving and writing the 49,408-entry vocabulary costs ~0.3 s; a user who switches checkpoints,
    or loads an embedding (which needs a fresh tokenizer), should pay it once.
    """
    import atexit
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="spatiora-clip-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    merges = shipped_merges()
    (folder / "vocab.json").write_text(vocab_text(merges), encoding="utf-8")
    (folder / "merges.txt").write_text(merges_text(merges), encoding="utf-8")
    return str(folder / "vocab.json"), str(folder / "merges.txt")


def clip_tokenizer(pad_token: str = PAD_CLIP_L) -> Any:
    """A transformers CLIPTokenizer for Stable Diffusion's text encoders, with no download.

    Each call builds a new tokenizer (a loaded embedding adds tokens to the one it is given)."""
    from transformers import CLIPTokenizer

    vocab, merges = _tokenizer_files()
    if not (Path(vocab).is_file() and Path(merges).is_file()):  # a tmp cleaner removed them
        _tokenizer_files.cache_clear()
        vocab, merges = _tokenizer_files()
    return CLIPTokenizer(
        vocab,
        merges,
        model_max_length=MAX_LENGTH,
        pad_token=pad_token,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=EOS,
    )
