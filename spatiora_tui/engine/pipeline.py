"""Load the one base pipeline that stays resident: demo, diffusers folder, single file or hub id.

Also decides device and dtype, detects the model family (SD 1.x / 2.x / SDXL), and keeps the
libraries quiet: their progress bars and log lines would corrupt a terminal UI.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from spatiora_tui import failpoints
from spatiora_tui.config import ModelSettings
from spatiora_tui.engine.api import EngineError, EngineOOM, ModelInfo, is_out_of_memory

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SUPPORTED_PIPELINES = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
}


def quiet_libraries() -> None:
    """Silence diffusers/transformers/hub progress bars and chatter before they are imported."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "critical")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "critical")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(diffusers|transformers|peft|torch)\.")
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    # Critical only: a failed LoRA load, for one, is logged as an error and raised as well. The
    # raise reaches the user as an EngineError; the log line would land raw on the terminal the
    # UI is drawing on.
    dlog.set_verbosity(dlog.CRITICAL)
    dlog.disable_progress_bar()
    tlog.set_verbosity(tlog.CRITICAL)
    tlog.disable_progress_bar()


@dataclass(frozen=True)
class ModelSource:
    """A classified `model.source`: what kind it is and the value to load."""

    kind: str  # demo | folder | single_file | hub
    value: str

    @property
    def name(self) -> str:
        if self.kind == "demo":
            return "spatiora-demo"
        if self.kind == "hub":
            return self.value
        return Path(self.value).stem if self.kind == "single_file" else Path(self.value).name


PICKLE_REFUSED = ("loading one can run arbitrary code (unpickling executes what the file says), so "
                  "Spatiora loads only .safetensors unless [security] allow_pickle = true in config.toml. "
                  "Convert it to .safetensors, or turn allow_pickle on if you trust the file")


def classify_source(source: str, allow_pickle: bool = False) -> ModelSource:
    """Decide what `model.source` names, or say clearly why it names nothing loadable."""
    if source == "demo":
        return ModelSource("demo", source)
    path = Path(source).expanduser()
    looks_like_path = source.startswith(("/", "./", "../", "~")) or path.suffix.lower() in (
        ".safetensors", *PICKLE_SUFFIXES
    )
    if path.exists() or looks_like_path:
        if not path.exists():
            raise EngineError(
                f"model path {path} does not exist; fix model.source in config.toml "
                '(a diffusers folder, a .safetensors file, a hub id, or "demo")'
            )
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise EngineError(
                    f"{path} is a folder without model_index.json, so it is not a diffusers pipeline; "
                    "point model.source at the folder that holds model_index.json"
                )
            return ModelSource("folder", str(path))
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            if not allow_pickle:
                raise EngineError(f"{path.name} is a pickle checkpoint ({suffix}); {PICKLE_REFUSED}")
            return ModelSource("single_file", str(path))
        if suffix != ".safetensors":
            raise EngineError(f"{path} is not a .safetensors checkpoint or a diffusers folder")
        return ModelSource("single_file", str(path))
    if _HUB_ID.match(source):
        return ModelSource("hub", source)
    raise EngineError(
        f"model.source {source!r} is neither an existing path nor a hub id like 'owner/name'; "
        'fix it in config.toml or use "demo"'
    )


def resolve_device(preference: str) -> str:
    import torch

    if preference == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if preference == "cuda" and not torch.cuda.is_available():
        raise EngineError("model.device is 'cuda' but torch sees no CUDA GPU; use 'auto' or 'cpu', "
                          "or install a CUDA build of PyTorch")
    if preference == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EngineError("model.device is 'mps' but Apple MPS is not available; use 'auto' or 'cpu'")
    return preference


def resolve_dtype(preference: str, device: str) -> Any:
    import torch

    if preference == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[preference]


def detect_family(pipe: Any) -> str:
    """sd1, sd2 or sdxl, from the components rather than from names a user may have changed."""
    if getattr(pipe, "text_encoder_2", None) is not None or type(pipe).__name__.startswith("StableDiffusionXL"):
        return "sdxl"
    if pipe.unet.config.cross_attention_dim == 1024:
        return "sd2"
    return "sd1"


def _pipeline_class(kind: str) -> Any:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if kind == "sdxl" else StableDiffusionPipeline


def _folder_kind(folder: Path) -> str:
    try:
        class_name = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))["_class_name"]
    except (OSError, ValueError, KeyError) as exc:
        raise EngineError(f"{folder}/model_index.json is unreadable ({exc}); re-download the model") from None
    if class_name not in SUPPORTED_PIPELINES:
        raise EngineError(
            f"{folder} holds a {class_name}; Spatiora supports Stable Diffusion 1.x, 2.x and SDXL pipelines"
        )
    return SUPPORTED_PIPELINES[class_name]


def _single_file_kind(path: Path) -> str:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        keys = _pickle_keys(path)
    else:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                keys = list(fh.keys())
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise EngineError(f"{path} is not a readable .safetensors checkpoint ({exc}); re-download it") from None
    if any(k.startswith("conditioner.embedders.1") for k in keys):
        return "sdxl"
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        raise EngineError(
            f"{path.name} holds no Stable Diffusion UNet (no model.diffusion_model.* tensors); "
            "is it a LoRA or a VAE? Put LoRAs in the adapters folder"
        )
    return "sd"


def unpickle_state_dict(source: Path | bytes) -> dict[str, Any]:
    """The tensors of a pickle file (.ckpt/.pt/.pth/.bin; only reached with allow_pickle on),
    unpickled with weights_only=True: tensors and plain containers only, no arbitrary objects.
    A {"state_dict": {...}} wrapper is unwrapped. Raises ValueError with what is wrong, phrased
    to follow the file's name ("is not a readable checkpoint (…)", "holds no tensors")."""
    import io

    import torch

    try:
        if isinstance(source, bytes):
            loaded = torch.load(io.BytesIO(source), map_location="cpu", weights_only=True)
        else:
            loaded = torch.load(str(source), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"is not a readable checkpoint ({detail})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)} if isinstance(loaded, dict) else {}
    if not tensors:
        raise ValueError("holds no tensors")
    return tensors


def _pickle_keys(path: Path) -> list[str]:
    try:
        return list(unpickle_state_dict(path))
    except ValueError as exc:
        raise EngineError(f"{path} {exc}; it is not a usable Stable Diffusion checkpoint: re-download it") from None


def load_pipeline(
    settings: ModelSettings, cache_dir: Path, on_progress: Callable[[str], None] | None = None,
    allow_pickle: bool = False,
) -> tuple[Any, ModelInfo, Path | None]:
    """Load the base pipeline on its device.

    Returns the pipeline, its ModelInfo, and for the demo the folder holding its adapters.
    Without allow_pickle only .safetensors weights are read, in folders and hub models too.
    """
    say = on_progress or (lambda _msg: None)
    source = classify_source(settings.source, allow_pickle)
    say("importing torch and diffusers")
    quiet_libraries()
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    demo_adapters: Path | None = None
    say(f"loading {source.name} ({source.kind}) on {device}")
    common: dict[str, Any] = {"torch_dtype": dtype}
    out_of_memory = False
    if not allow_pickle and source.kind in ("folder", "hub"):
        common["use_safetensors"] = True  # diffusers then refuses .bin weights instead of unpickling them
    try:
        if source.kind == "demo":
            from spatiora_tui.engine.demo import ensure_demo

            folder = ensure_demo(cache_dir, say)
            demo_adapters = folder / "adapters"
            pipe = _pipeline_class("sd").from_pretrained(
                str(folder / "pipeline"), local_files_only=True, safety_checker=None, **common
            )
        elif source.kind == "folder":
            kind = _folder_kind(Path(source.value))
            extra = {"safety_checker": None} if kind == "sd" else {}
            pipe = _pipeline_class(kind).from_pretrained(source.value, local_files_only=True, **extra, **common)
        elif source.kind == "single_file":
            kind = _single_file_kind(Path(source.value))
            pipe = _pipeline_class(kind).from_single_file(source.value, local_files_only=True, **common)
        else:
            pipe = _load_from_hub(source.value, common)
        if getattr(pipe, "safety_checker", None) is not None:
            # Local, private design work: the NSFW filter blacks out architecture renders at random.
            pipe.safety_checker = None
        failpoints.hit("load")
        pipe.to(device)  # where a model too big for the GPU runs out of memory
    except EngineError:
        raise
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise EngineError(_explain_load_failure(source, exc)) from None
        out_of_memory = True
    if out_of_memory:
        # After the except block, whose traceback held the half-loaded weights.
        from spatiora_tui.engine.generate import release_memory

        pipe = None
        release_memory(device == "cuda")
        where = "GPU memory" if device == "cuda" else "memory"
        raise EngineOOM(f"out of {where} while loading {source.name}; try dtype = \"fp16\", a smaller model, "
                        "or close other programs")

    pipe.set_progress_bar_config(disable=True)
    info = ModelInfo(
        name=f"{source.name} (random weights)" if source.kind == "demo" else source.name,
        source=settings.source,
        kind=source.kind,
        family=detect_family(pipe),
        device=device,
        dtype={"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}[str(dtype).replace("torch.", "")],
        random_weights=source.kind == "demo",
    )
    return pipe, info, demo_adapters


def _load_from_hub(repo_id: str, common: dict[str, Any]) -> Any:
    from diffusers import DiffusionPipeline

    try:
        return DiffusionPipeline.from_pretrained(repo_id, local_files_only=True, **common)
    except Exception:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise EngineError(
                f"model {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                f"download it where there is network (`huggingface-cli download {repo_id}`) "
                "or point model.source at a local folder or .safetensors file"
            ) from None
    try:
        return DiffusionPipeline.from_pretrained(repo_id, **common)
    except Exception as exc:
        raise EngineError(
            f"could not load model {repo_id!r} from the hub or the local cache ({type(exc).__name__}); "
            f"check the id and your network, or download it first (`huggingface-cli download {repo_id}`) "
            "or point model.source at a local folder"
        ) from None


def _explain_load_failure(source: ModelSource, exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "safetensors" in text.lower() and source.kind in ("folder", "hub"):
        return (f"{source.name} has no .safetensors weights for every part (only pickle .bin files); "
                f"{PICKLE_REFUSED}")
    if source.kind == "single_file" and ("local_files_only" in text or "connect" in text.lower()):
        return (
            f"{source.value}: a single-file checkpoint needs its model's config files, which are not in "
            "the local Hugging Face cache; convert it to a diffusers folder once on a machine with "
            "network, or use a diffusers folder"
        )
    return f"could not load model {source.name!r} ({source.kind}): {text}"
