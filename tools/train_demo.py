"""Train the demo model from scratch on procedural plans and interiors (issue 21), in stages:

  vae    an AutoencoderKL with a factor-4 latent (64x64 images -> 4x16x16), trained once and
         frozen; its latents' spread sets the scaling factor
  base   the CLIP text encoder (the real CLIP tokenizer, a tiny encoder) and the UNet, together,
         on both kinds with their shared captions (epsilon prediction, min-SNR-5 weighting,
         captions dropped 10% of the time for classifier-free guidance)
  lora   one LoRA per task on the frozen base (rank 8): interior on rooms, floorplan on plans,
         each with its task's prompt template from config.toml, so the same prompt draws a room
         or a plan; its negative prompt is trained as the unconditional side, partly over the
         other kind (lora_batch)

    python tools/train_demo.py --out build/demo-train                 # every stage not yet done
    python tools/train_demo.py --out build/demo-train --stage vae --steps 1200
    python tools/train_demo.py --out DIR --smoke                        # two steps of each on 8 samples (tests)

Seeded: the same command gives the same weights on the same machine and torch. Each stage writes
its result into --out and is skipped when it is there (--again reruns it). Progress: a line
every --every steps with the loss, steps/s and the time left.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from spatiora_tui.procedural.scenes import KINDS, Kind, samples  # noqa: E402

SIZE = 64
SEED = 2026
#: Steps per stage (what the shipped weights were trained with: docs/demo.md).
STEPS = {"vae": 1200, "base": 3000, "lora interior": 1200, "lora floorplan": 1200}
BATCH = 32
#: Procedural samples per stage in a --smoke run (its batches are the whole pool): what the tests
#: check (every stage runs, skips what is done, is seeded, writes files that load) holds at any size.
SMOKE_POOL = 8
POOL = 6000  # procedural samples drawn once per stage (the kinds in turn)
MODEL_NAME = "spatiora-demo"
#: The task LoRAs and the kind each draws; each is trained with its task's prompt template and
#: negative prompt from the repository's config.toml, as they are used.
TEMPLATES: dict[str, Kind] = {"interior": "room", "floorplan": "plan"}
#: Shares of a LoRA batch: the other kind under the task's negative prompt, the task's own kind
#: under it, and the task's own kind under the empty prompt; the rest is the prompt in the template.
CONTRAST, NEGATIVE, UNCOND = 0.1, 0.1, 0.1


def task_prompts(task: str) -> tuple[str, str]:
    """(prompt template, negative prompt) of `task` in the repository's config.toml."""
    from spatiora_tui.config import load_settings

    settings = load_settings(REPO / "config.toml")
    found = settings.task(task)
    return found.prompt_template, found.negative_prompt


def vae_config() -> dict[str, Any]:
    return dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=16,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        sample_size=SIZE,
    )


def unet_config() -> dict[str, Any]:
    return dict(
        sample_size=SIZE // 4,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(64, 128, 128),
        norm_num_groups=16,
        cross_attention_dim=64,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )


def text_config(tokenizer: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


# -- data ------------------------------------------------------------------------------------


def pool(seed: int, kinds: tuple[Kind, ...], count: int) -> tuple[Any, list[str]]:
    """`count` images as one uint8 tensor [N, 3, 64, 64] and their captions."""
    import numpy as np
    import torch

    drawn = samples(count, seed, kinds, SIZE)
    images = torch.from_numpy(np.stack([np.asarray(image) for image, _, _, _ in drawn])).permute(0, 3, 1, 2)
    return images.contiguous(), [caption for _, caption, _, _ in drawn]


def batches(images: Any, captions: list[str], gen: Any) -> Iterator[tuple[Any, list[str]]]:
    """Random batches, forever: images in [-1, 1], with a random horizontal flip (left and right
    windows swap: their words are swapped in the caption too). BATCH each, or the whole pool when
    it is smaller (a --smoke run's)."""
    import torch

    size = min(BATCH, len(captions))
    while True:
        index = torch.randint(0, len(captions), (size,), generator=gen)
        x = images[index].float() / 127.5 - 1.0
        flip = torch.rand(size, generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)
        text = [_flipped(captions[i]) if f else captions[i] for i, f in zip(index.tolist(), flip.tolist())]
        yield x, text


def _flipped(caption: str) -> str:
    return (
        caption.replace("on the left", "on the @")
        .replace("on the right", "on the left")
        .replace("on the @", "on the right")
    )


# -- progress and stages ------------------------------------------------------------------------


class Progress:
    def __init__(self, stage: str, steps: int, every: int) -> None:
        self.stage, self.steps, self.every = stage, steps, every
        self.start = time.perf_counter()
        self.losses: list[float] = []

    def step(self, i: int, loss: float) -> None:
        self.losses.append(loss)
        if (i + 1) % self.every == 0 or i + 1 == self.steps:
            elapsed = time.perf_counter() - self.start
            rate = (i + 1) / elapsed
            mean = sum(self.losses[-self.every :]) / len(self.losses[-self.every :])
            left = (self.steps - i - 1) / rate
            print(
                f"{self.stage} step {i + 1}/{self.steps} · loss {mean:.4f} · {rate:.2f} steps/s · {left / 60:.1f} min left",
                flush=True,
            )


def train_vae(out: Path, steps: int, every: int, pool_size: int = POOL) -> None:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    images, captions = pool(SEED, ("plan", "room"), pool_size)
    vae = AutoencoderKL(**vae_config())
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    progress = Progress("vae", steps, every)
    data = batches(images, captions, gen)
    for i in range(steps):
        x, _ = next(data)
        posterior = vae.encode(x).latent_dist
        y = vae.decode(posterior.sample(generator=gen)).sample
        # L1 keeps edges (1-2 px walls); MSE the flat colours; a whisper of KL keeps latents tame.
        loss = (y - x).abs().mean() + (y - x).pow(2).mean() + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        progress.step(i, loss.item())
    vae.eval()
    with torch.no_grad():
        x = images[:512].float() / 127.5 - 1.0
        latents = vae.encode(x).latent_dist.mean
        recon = vae.decode(latents).sample
    scaling = 1.0 / float(latents.std())
    vae.register_to_config(scaling_factor=scaling)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    report = {"steps": steps, "scaling_factor": scaling, "recon_l1": float((recon - x).abs().mean())}
    (out / "vae" / "train.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"vae: scaling factor {scaling:.4f}, reconstruction L1 {report['recon_l1']:.4f} (on [-1, 1])", flush=True)


def _encode_text(tokenizer: Any, text_encoder: Any, texts: list[str]) -> Any:
    ids = tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids)[0]


def _noise_loss(unet: Any, scheduler: Any, latents: Any, context: Any, gen: Any) -> Any:
    """Epsilon prediction, min-SNR-5 weighted (Hang et al. 2023): the easy, low-noise steps do not
    drown the structure the high-noise steps have to learn."""
    import torch

    noise = torch.randn(latents.shape, generator=gen)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=gen)
    noisy = scheduler.add_noise(latents, noise, t)
    pred = unet(noisy, t, context).sample
    alpha = scheduler.alphas_cumprod[t]
    snr = alpha / (1 - alpha)
    weight = torch.clamp(snr, max=5.0) / snr
    return (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()


def _latents(vae: Any, x: Any) -> Any:
    import torch

    with torch.no_grad():
        return vae.encode(x).latent_dist.mean * vae.config.scaling_factor


def train_base(out: Path, steps: int, every: int, pool_size: int = POOL) -> None:
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from spatiora_tui.engine.clip_tokenizer import clip_tokenizer

    torch.manual_seed(SEED + 1)
    gen = torch.Generator().manual_seed(SEED + 1)
    vae = AutoencoderKL.from_pretrained(out / "vae").eval().requires_grad_(False)
    tokenizer = clip_tokenizer()
    text_encoder = CLIPTextModel(text_config(tokenizer))
    unet = UNet2DConditionModel(**unet_config())
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    images, captions = pool(SEED + 1, ("plan", "room"), pool_size)
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-4, total_steps=steps, pct_start=0.03)
    progress = Progress("base", steps, every)
    data = batches(images, captions, gen)
    for i in range(steps):
        x, text = next(data)
        text = ["" if random.Random(SEED + i * BATCH + j).random() < 0.1 else t for j, t in enumerate(text)]
        loss = _noise_loss(unet, scheduler, _latents(vae, x), _encode_text(tokenizer, text_encoder, text), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        progress.step(i, loss.item())
    unet.save_pretrained(out / "unet", safe_serialization=True)
    text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    (out / "unet" / "train.json").write_text(json.dumps({"steps": steps}, indent=1), encoding="utf-8")


def lora_batch(
    x: Any, text: list[str], others: Any, template: str, negative: str, rng: random.Random, gen: Any
) -> tuple[Any, list[str]]:
    """A task LoRA's batch as it is used when generating: each prompt in the task's template,
    and the unconditional side of classifier-free guidance as it comes: the task's negative
    prompt, over an image of the other kind (CONTRAST of the time) or of the task's own
    (NEGATIVE), or the empty prompt (UNCOND). So the words the base never saw ("perspective, 3d
    render, photo") come to mean, in part, what the task must not draw, and guidance steers
    away from it as a negative prompt does on a real model, while still steering towards what
    the prompt says (a wall colour, a room count) within the task's kind."""
    import torch

    x = x.clone()
    prompts = []
    for j, caption in enumerate(text):
        roll = rng.random()
        if negative and roll < CONTRAST:
            pick = int(torch.randint(0, len(others), (1,), generator=gen))
            x[j] = others[pick].float() / 127.5 - 1.0
            prompts.append(negative)
        elif negative and roll < CONTRAST + NEGATIVE:
            prompts.append(negative)
        elif roll < CONTRAST + NEGATIVE + UNCOND:
            prompts.append("")
        else:
            prompts.append(template.format(prompt=caption))
    return x, prompts


def train_lora(out: Path, task: str, steps: int, every: int, pool_size: int = POOL) -> None:
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict
    from transformers import CLIPTextModel

    from spatiora_tui.engine.clip_tokenizer import clip_tokenizer

    kind = TEMPLATES[task]
    template, negative = task_prompts(task)
    seed = SEED + 10 + list(TEMPLATES).index(task)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    vae = AutoencoderKL.from_pretrained(out / "vae").eval().requires_grad_(False)
    tokenizer = clip_tokenizer()
    text_encoder = CLIPTextModel.from_pretrained(out / "text_encoder").eval().requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(out / "unet").requires_grad_(False)
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    unet.add_adapter(
        LoraConfig(r=8, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out"]),
        adapter_name=task,
    )
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    images, captions = pool(seed, (kind,), pool_size)
    others, _ = pool(seed + 100, tuple(k for k in KINDS if k != kind), pool_size // 4)
    progress = Progress(f"lora {task}", steps, every)
    data = batches(images, captions, gen)
    for i in range(steps):
        x, text = next(data)
        x, prompts = lora_batch(x, text, others, template, negative, random.Random(seed + i), gen)
        context = _encode_text(tokenizer, text_encoder, prompts)
        loss = _noise_loss(unet, scheduler, _latents(vae, x), context.detach(), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress.step(i, loss.item())
    state = get_peft_model_state_dict(unet, adapter_name=task)
    (out / "loras").mkdir(exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        str(out / "loras"), unet_lora_layers=state, weight_name=f"{task}.safetensors", safe_serialization=True
    )


def export(out: Path, model_dir: Path, adapter_dir: Path) -> None:
    """What users have, from the trained parts: the base as one AUTOMATIC1111-layout checkpoint
    (fp16) with its config folder beside it, each LoRA as a Kohya file with an adapter.toml."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    from spatiora_tui.engine.clip_tokenizer import clip_tokenizer
    from spatiora_tui.engine.ldm_layout import save_safetensors, save_single_file, write_config_folder

    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(out / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(out / "text_encoder"),
        tokenizer=clip_tokenizer(),
        unet=UNet2DConditionModel.from_pretrained(out / "unet"),
        scheduler=EulerDiscreteScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    model_dir.mkdir(parents=True, exist_ok=True)
    path = save_single_file(
        pipe,
        model_dir / f"{MODEL_NAME}.safetensors",
        dtype=torch.float16,
        metadata={"spatiora": "demo model, tools/train_demo.py"},
    )
    write_config_folder(pipe, model_dir / f"{MODEL_NAME}.config")
    print(f"export: {path} ({path.stat().st_size / 2**20:.1f} MB)", flush=True)
    adapter_dir.mkdir(parents=True, exist_ok=True)
    for task, kind in TEMPLATES.items():
        peft = load_file(out / "loras" / f"{task}.safetensors")
        kohya: dict[str, Any] = {}
        for key, value in peft.items():
            if not key.endswith(".lora_A.weight"):
                continue
            module = key[len("unet.") : -len(".lora_A.weight")]
            stem = "lora_unet_" + module.replace(".", "_")
            kohya[f"{stem}.lora_down.weight"] = value.to(torch.float16).contiguous()
            kohya[f"{stem}.lora_up.weight"] = peft[f"unet.{module}.lora_B.weight"].to(torch.float16).contiguous()
            kohya[f"{stem}.alpha"] = torch.tensor(float(value.shape[0]), dtype=torch.float16)
        lora = adapter_dir / f"{task}.safetensors"
        save_safetensors(kohya, lora, {"ss_network_module": "networks.lora", "ss_base_model_version": "sd_v1"})
        (adapter_dir / f"{task}.adapter.toml").write_text(
            f'base = "sd1"\ndefault_weight = 1.0\ndescription = "Spatiora demo model: draws {kind}s"\n',
            encoding="utf-8",
        )
        print(f"export: {lora} ({lora.stat().st_size / 1024:.0f} KB)", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "demo-train")
    parser.add_argument("--stage", choices=["vae", "base", "lora", "export", "all"], default="all")
    parser.add_argument("--models", type=Path, help="where export writes the checkpoint (default: --out/models)")
    parser.add_argument("--adapters", type=Path, help="where export writes the LoRAs (default: --out/adapters)")
    parser.add_argument("--steps", type=int, help="steps for the stage(s) run (default: each stage's own)")
    parser.add_argument("--every", type=int, default=50, help="a progress line every N steps")
    parser.add_argument("--tasks", help="the lora stage for these tasks only (comma-separated)")
    parser.add_argument("--again", action="store_true", help="rerun stages whose result is there")
    parser.add_argument("--smoke", action="store_true", help="a few steps of each stage (for tests)")
    parser.add_argument("--pool", type=int, default=POOL, help=f"procedural samples per stage (default {POOL})")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    import torch

    pool_size = SMOKE_POOL if args.smoke else args.pool
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    def steps_for(stage: str) -> int:
        return 2 if args.smoke else args.steps or STEPS[stage]

    loras = [t for t in TEMPLATES if not args.tasks or t in args.tasks.split(",")]

    stages: list[tuple[str, Path, Callable[[], None]]] = [
        ("vae", args.out / "vae", lambda: train_vae(args.out, steps_for("vae"), args.every, pool_size)),
        ("base", args.out / "unet", lambda: train_base(args.out, steps_for("base"), args.every, pool_size)),
        *(
            (
                "lora",
                args.out / "loras" / f"{task}.safetensors",
                lambda task=task: train_lora(args.out, task, steps_for(f"lora {task}"), args.every, pool_size),
            )
            for task in loras
        ),
    ]
    models, adapters = args.models or args.out / "models", args.adapters or args.out / "adapters"
    stages.append(("export", models / f"{MODEL_NAME}.safetensors", lambda: export(args.out, models, adapters)))
    for name, result, run in stages:
        if args.stage not in ("all", name):
            continue
        if result.exists() and not args.again:
            print(f"{name}: done already ({result}); --again reruns it", flush=True)
            continue
        start = time.perf_counter()
        run()
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
