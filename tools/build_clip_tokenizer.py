"""Build the CLIP tokenizer data Spatiora ships, from OpenAI's MIT-licensed BPE file.

Every Stable Diffusion text encoder (CLIP-L for SD 1.x and SDXL, OpenCLIP-H for SD 2.x,
OpenCLIP-bigG for SDXL) reads the same byte-level BPE vocabulary: OpenAI's
`bpe_simple_vocab_16e6.txt.gz` (github.com/openai/CLIP, MIT licence, "Copyright (c) 2021 OpenAI").
It is republished unchanged in the `clip-anytorch` wheel on PyPI (MIT licence, same copyright),
which is where this script takes it from. Nothing from a model hub is needed.

The script keeps only what cannot be derived: the 48,894 merges the tokenizer uses, gzipped, in
spatiora_tui/engine/configs/clip/merges.txt.gz. The vocabulary is a function of the merges
(spatiora_tui/engine/clip_tokenizer.py rebuilds it at load time), and the script checks that what
it derives is byte for byte the vocab.json and merges.txt transformers' CLIPTokenizer reads for
openai/clip-vit-large-patch14.

    python tools/build_clip_tokenizer.py                 # downloads clip-anytorch 2.6.0 from PyPI
    python tools/build_clip_tokenizer.py --bpe PATH      # a bpe_simple_vocab_16e6.txt.gz you have
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spatiora_tui.engine.clip_tokenizer import (  # noqa: E402
    MERGES_FILE,
    MERGES_SHA256,
    VOCAB_SHA256,
    merges_text,
    vocab_text,
)

BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
WHEEL = "clip-anytorch==2.6.0"
#: merges used by CLIP: the file's lines after its header, up to the vocabulary size of 49,408
#: (256 bytes, 256 end-of-word bytes, the merges, and two special tokens).
MERGE_COUNT = 49152 - 256 - 2


def bpe_from_wheel() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, WHEEL], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            return archive.read("clip/bpe_simple_vocab_16e6.txt.gz")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bpe", type=Path, help="bpe_simple_vocab_16e6.txt.gz (default: from the clip-anytorch wheel)")
    args = parser.parse_args()
    data = args.bpe.read_bytes() if args.bpe else bpe_from_wheel()
    digest = hashlib.sha256(data).hexdigest()
    if digest != BPE_SHA256:
        sys.exit(f"the BPE file's sha256 is {digest}, not OpenAI's {BPE_SHA256}")
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    pairs = [line.split() for line in lines[1 : MERGE_COUNT + 1]]
    assert all(len(pair) == 2 for pair in pairs), "a merge line is not two symbols"
    merges = [(first, second) for first, second in pairs]
    text = merges_text(merges)
    checks = {"merges.txt": (text, MERGES_SHA256), "vocab.json": (vocab_text(merges), VOCAB_SHA256)}
    for name, (content, expected) in checks.items():
        got = hashlib.sha256(content.encode("utf-8")).hexdigest()
        if got != expected:
            sys.exit(f"derived {name} has sha256 {got}, not the reference {expected}")
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=9, filename="") as fh:
        fh.write(text.encode("utf-8"))
    MERGES_FILE.write_bytes(buffer.getvalue())
    print(
        f"wrote {MERGES_FILE.relative_to(REPO)} ({len(buffer.getvalue()):,} bytes, {len(merges):,} merges); "
        "vocab.json and merges.txt derive byte for byte"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
