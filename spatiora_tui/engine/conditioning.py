"""Text conditioning as AUTOMATIC1111 computes it: weighted tokens, 75-token chunks.

The prompt (emphasis parsed by spatiora_tui.prompts) is tokenized fragment by fragment, each
token keeping its fragment's weight, and cut into chunks of 75 tokens: at a BREAK, or when a
chunk is full (going back to the last comma within 20 tokens, so that a phrase is not split).
Each chunk is encoded as [start] + 75 tokens + [end], padded after the end token as diffusers
pads; the chunks' outputs are concatenated, so a prompt of any length is read whole.

Emphasis follows A1111's default ("Original"): each token's output vector is multiplied by its
weight, then the whole chunk is rescaled so that its mean is what it was before. With every
weight 1 nothing is rescaled, and a prompt of up to 75 tokens gives exactly what diffusers'
encode_prompt gives (tested), so plain prompts draw the same images as before.

SD 1.x/2.x use the text encoder's last layer (for SD 2.x the checkpoint's penultimate: the last
one is left out at load); SDXL concatenates both encoders' penultimate layers and takes the
pooled output of the second encoder's first chunk. An empty SDXL negative prompt is zeros, as
diffusers does for these models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spatiora_tui.prompts import parse_emphasis

CHUNK = 75
COMMA_BACKTRACK = 20


@dataclass
class Chunk:
    ids: list[int]
    weights: list[float]


def _chunks(tokenizer: Any, text: str, convert: Any = None) -> list[Chunk]:
    """`text` as chunks of at most CHUNK tokens with their weights."""
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    if tokenizer.convert_ids_to_tokens(comma) != ",</w>":
        comma = -1  # a vocabulary without it (the demo's): no comma backtracking
    chunks: list[Chunk] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close() -> None:
        nonlocal ids, weights, last_comma
        chunks.append(Chunk(ids, weights))
        ids, weights, last_comma = [], [], -1

    for run in parse_emphasis(text):
        if run is None:  # BREAK
            close()
            continue
        fragment, weight = run
        if convert is not None:
            fragment = convert(fragment)
        for token in tokenizer(fragment, add_special_tokens=False, truncation=False).input_ids:
            if len(ids) == CHUNK:
                if last_comma >= 0 and CHUNK - last_comma <= COMMA_BACKTRACK:
                    # Move the words after the last comma to the next chunk.
                    keep = last_comma + 1
                    rest_ids, rest_weights = ids[keep:], weights[keep:]
                    ids, weights = ids[:keep], weights[:keep]
                    close()
                    ids, weights = rest_ids, rest_weights
                else:
                    close()
            if token == comma:
                last_comma = len(ids)
            ids.append(token)
            weights.append(weight)
    if ids or not chunks:
        close()
    return chunks


def _padded(tokenizer: Any, chunk: Chunk) -> tuple[list[int], list[float]]:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = [bos, *chunk.ids, eos]
    weights = [1.0, *chunk.weights, 1.0]
    filler = CHUNK + 2 - len(ids)
    return ids + [pad] * filler, weights + [1.0] * filler


def _emphasise(z: Any, weights: Any) -> Any:
    """A1111's "Original" emphasis: weight each token's vector, keep the chunk's mean."""
    if bool((weights == 1.0).all()):
        return z
    before = z.mean()
    z = z * weights.reshape(1, -1, 1).to(z.dtype)
    return z * (before / z.mean())


@dataclass
class Encoded:
    """Per-encoder chunk outputs of one prompt, before padding to the other prompt's length."""

    chunks: list[Any]  # [1, 77, width] per chunk
    pooled: Any = None  # SDXL: [1, 1280]


def _encode(pipe: Any, text: str, sdxl: bool) -> Encoded:
    import torch

    encoders = [(pipe.tokenizer, pipe.text_encoder)]
    if sdxl:
        encoders.append((pipe.tokenizer_2, pipe.text_encoder_2))
    # Where the encoders run: under offload they wait in RAM and the pipeline's hooks bring them
    # to its execution device, where their outputs (and so the weights below) then are.
    device = getattr(pipe, "_execution_device", None) or (
        pipe.text_encoder.device if pipe.text_encoder is not None else pipe.text_encoder_2.device
    )
    per_encoder: list[list[Any]] = []
    pooled = None
    for tokenizer, encoder in encoders:
        convert = (
            (lambda t, tok=tokenizer: pipe.maybe_convert_prompt(t, tok))
            if hasattr(pipe, "maybe_convert_prompt")
            else None
        )
        outputs = []
        for index, chunk in enumerate(_chunks(tokenizer, text, convert)):
            ids, weights = _padded(tokenizer, chunk)
            ids_t = torch.tensor([ids], device=device)
            if sdxl:
                out = encoder(ids_t, output_hidden_states=True)
                if encoder is pipe.text_encoder_2 and index == 0:
                    pooled = out[0]
                z = out.hidden_states[-2]
            else:
                z = encoder(ids_t)[0]
            outputs.append(_emphasise(z, torch.tensor(weights, device=device)))
        per_encoder.append(outputs)
    if sdxl:
        chunks = [torch.cat(parts, dim=-1) for parts in zip(*per_encoder)]
    else:
        chunks = per_encoder[0]
    return Encoded(chunks, pooled)


def encode_prompts(pipe: Any, prompt: str, negative: str, guidance: float) -> dict[str, Any]:
    """The pipeline keyword arguments (prompt_embeds, ... ) for `prompt` and `negative`."""
    import torch

    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    dtype = (pipe.text_encoder or pipe.text_encoder_2).dtype
    with torch.no_grad():
        positive = _encode(pipe, prompt, sdxl)
        zero_negative = sdxl and not negative.strip() and getattr(pipe.config, "force_zeros_for_empty_prompt", False)
        use_negative = guidance > 1.0
        negative_encoded = _encode(pipe, negative, sdxl) if use_negative and not zero_negative else None
        if negative_encoded is not None:
            # Both must be as long: the shorter gets chunks of the empty prompt, as in A1111.
            length = max(len(positive.chunks), len(negative_encoded.chunks))
            if len(positive.chunks) < length or len(negative_encoded.chunks) < length:
                empty = _encode(pipe, "", sdxl).chunks[0]
                for encoded in (positive, negative_encoded):
                    encoded.chunks += [empty] * (length - len(encoded.chunks))
        embeds = torch.cat(positive.chunks, dim=1).to(dtype)
        kwargs: dict[str, Any] = {"prompt_embeds": embeds}
        if use_negative:
            negative_embeds = (
                torch.zeros_like(embeds)
                if negative_encoded is None
                else torch.cat(negative_encoded.chunks, dim=1).to(dtype)
            )
            kwargs["negative_prompt_embeds"] = negative_embeds
        if sdxl:
            kwargs["pooled_prompt_embeds"] = positive.pooled.to(dtype)
            if use_negative:
                kwargs["negative_pooled_prompt_embeds"] = (
                    torch.zeros_like(positive.pooled) if negative_encoded is None else negative_encoded.pooled
                ).to(dtype)
    return kwargs
