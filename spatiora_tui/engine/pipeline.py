"""Load the one base pipeline that stays resident: demo, diffusers folder, single file or hub id.

Also decides device and dtype, detects the model family (SD 1.x / 2.x / SDXL), and keeps the
libraries quiet: their progress bars and log lines would corrupt a terminal UI.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spatiora_tui import failpoints
from spatiora_tui.config import ModelSettings
from spatiora_tui.engine.api import EngineError, EngineOOM, ModelInfo, is_out_of_memory
from spatiora_tui.hw.memory import release_memory
from spatiora_tui.library.families import FAMILIES
from spatiora_tui.units import MB

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

    kind: str  # demo | folder | single_file | hub (ModelInfo.kind; benchmarks' loader adds "random")
    value: str

    @property
    def name(self) -> str:
        if self.kind == "demo":
            return "spatiora-demo"
        if self.kind == "hub":
            return self.value
        return Path(self.value).stem if self.kind == "single_file" else Path(self.value).name


PICKLE_REFUSED = (
    "loading one can run arbitrary code (unpickling executes what the file says), so "
    "Spatiora loads only .safetensors unless [security] allow_pickle = true in config.toml. "
    "Convert it to .safetensors, or turn allow_pickle on if you trust the file"
)


def classify_source(source: str, allow_pickle: bool = False) -> ModelSource:
    """Decide what `model.source` names, or say clearly why it names nothing loadable."""
    if source in ("demo", "demo-random"):
        return ModelSource("demo", source)
    path = Path(source).expanduser()
    looks_like_path = source.startswith(("/", "./", "../", "~")) or path.suffix.lower() in (
        ".safetensors",
        *PICKLE_SUFFIXES,
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
        f"model.source {source!r} is neither an existing path, a checkpoint in the [paths] model folders "
        "(`spatiora models` lists them), nor a hub id like 'owner/name'; fix it in config.toml or use \"demo\""
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
        raise EngineError(
            "model.device is 'cuda' but torch sees no CUDA GPU; use 'auto' or 'cpu', or install a CUDA build of PyTorch"
        )
    if preference == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EngineError("model.device is 'mps' but Apple MPS is not available; use 'auto' or 'cpu'")
    return preference


#: [model] dtype labels and the torch dtypes they name.
DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def resolve_dtype(preference: str, device: str) -> Any:
    import torch

    if preference == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    return getattr(torch, DTYPES[preference])


def dtype_label(dtype: Any) -> str:
    """fp16, bf16 or fp32 for a torch dtype."""
    name = str(dtype).replace("torch.", "")
    return next(label for label, torch_name in DTYPES.items() if torch_name == name)


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


def _pickle_header(path: Path) -> Any:
    """A header-like view of a pickle checkpoint's tensors (names and shapes), for identify."""
    from spatiora_tui.library.safetensors_file import Header, TensorInfo

    try:
        tensors = unpickle_state_dict(path)
    except ValueError as exc:
        raise EngineError(f"{path} {exc}; it is not a usable Stable Diffusion checkpoint: re-download it") from None
    infos = {k: TensorInfo("F32", tuple(v.shape), 0, 0) for k, v in tensors.items()}
    return Header(path, path.stat().st_size, 0, infos, {})


def single_file_plan(path: Path, settings: ModelSettings) -> tuple[Any, Path]:
    """What a single-file checkpoint is, and the diffusers config folder to build it with."""
    from spatiora_tui.engine.clip_tokenizer import CONFIGS
    from spatiora_tui.library.identify import identify_checkpoint

    header = _pickle_header(path) if path.suffix.lower() in PICKLE_SUFFIXES else None
    info = identify_checkpoint(path, settings.variant, header)
    beside = path.with_name(f"{path.stem}.config")
    if settings.config:
        folder = Path(settings.config).expanduser()
        if not (folder / "model_index.json").is_file():
            raise EngineError(
                f"[model] config = {settings.config!r} is not a diffusers config folder (no "
                "model_index.json in it); fix the path or leave config empty"
            )
    elif (beside / "model_index.json").is_file():
        folder = beside  # NAME.config/ beside NAME.safetensors: this file's own architecture
    else:
        folder = CONFIGS / info.variant.config
    return info, folder


#: The noise schedule every SD 1.x, 2.x and SDXL model was trained with. Some diffusers code
#: paths silently load others (0.02/0.085 with the legacy prediction_type keyword), which draws
#: only noise; loading checks for it.
TRAINED_BETAS = (0.00085, 0.012, "scaled_linear")


def _load_single_file(
    path: Path, settings: ModelSettings, common: dict[str, Any], cache_dir: Path, say: Callable[[str], object]
) -> tuple[Any, Any, Any]:
    """Load a single-file checkpoint with no network: the variant's config folder shipped with
    Spatiora (or [model] config), the CLIP tokenizer built from the shipped merges, and a
    scheduler carrying the variant's prediction type."""
    import diffusers

    from spatiora_tui.engine.clip_tokenizer import PAD_CLIP_L, PAD_OPEN_CLIP, clip_tokenizer

    info, folder = single_file_plan(path, settings)
    hashing = _hash_in_background(path, cache_dir, say)  # once the file is known to be a checkpoint
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    pipeline_class = getattr(diffusers, index["_class_name"])
    scheduler_class = getattr(diffusers, index["scheduler"][1])
    overrides: dict[str, Any] = {"prediction_type": info.variant.prediction}
    if info.zero_snr:
        overrides.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    scheduler = scheduler_class.from_config(
        scheduler_class.load_config(str(folder), subfolder="scheduler"), **overrides
    )
    components: dict[str, Any] = {"scheduler": scheduler}
    for name, pad in (
        ("tokenizer", PAD_OPEN_CLIP if info.variant.family == "sd2" else PAD_CLIP_L),
        ("tokenizer_2", PAD_OPEN_CLIP),
    ):
        if name in index and not (folder / name).is_dir():
            components[name] = clip_tokenizer(pad)
    say(f"loading {path.name} ({info.variant.label}, {info.how})")
    pipe = pipeline_class.from_single_file(str(path), config=str(folder), local_files_only=True, **components, **common)
    config = pipe.scheduler.config
    if (config.beta_start, config.beta_end, config.beta_schedule) != TRAINED_BETAS:
        raise EngineError(
            f"{path.name} loaded with the noise schedule {config.beta_start}/{config.beta_end} "
            f"{config.beta_schedule}, not the trained {TRAINED_BETAS}; this is a bug: report it"
        )
    return pipe, info, hashing


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


def _hash_in_background(path: Path, cache_dir: Path, say: Callable[[str], object]) -> Any:
    """The checkpoint's sha256 (AUTOMATIC1111's "Model hash"), computed on a thread while the
    model loads (both read the same file; hashlib releases the GIL), or taken from the cache."""
    from concurrent.futures import ThreadPoolExecutor

    from spatiora_tui.library.hashing import HashCache

    cache = HashCache(cache_dir / "hashes.json")

    def progress(done: int, total: int) -> None:
        say(f"loading {path.name}, hashing it for the image metadata: {100 * done // max(total, 1)}%")

    def run() -> str | None:
        try:
            return cache.get(path, "sha256", progress)
        except OSError:
            return None  # the hash is for metadata; a load can go on without it

    pool = ThreadPoolExecutor(1, thread_name_prefix="spatiora-hash")
    future = pool.submit(run)
    pool.shutdown(wait=False)
    return future


def _check_complete(pipe: Any, name: str) -> None:
    """diffusers fills a component from a single file without checking that every weight was
    there (missing ones stay unallocated): a file missing tensors is refused here, by name."""
    for component, model in pipe.components.items():
        missing = [n for n, p in getattr(model, "named_parameters", list)() if p.is_meta]
        if missing:
            raise EngineError(
                f"{name} lacks weights the architecture needs ({len(missing)} of its {component}, e.g. "
                f"{missing[0]}); the file is incomplete or of another architecture: download it again"
            )


def load_pipeline(
    settings: ModelSettings,
    cache_dir: Path,
    on_progress: Callable[[str], object] | None = None,
    allow_pickle: bool = False,
) -> tuple[Any, ModelInfo, Path | None]:
    """Load the base pipeline on its device.

    Returns the pipeline, its ModelInfo, and for the demo the folder holding its adapters.
    Without allow_pickle only .safetensors weights are read, in folders and hub models too.
    """
    from spatiora_tui.engine.demo import trained_demo

    say = on_progress or (lambda _msg: None)
    source = classify_source(settings.source, allow_pickle)
    trained = trained_demo(settings.source)
    if trained is not None:
        settings = dataclasses.replace(settings, variant="auto", config="")  # its own config folder, beside it
    say("importing torch and diffusers")
    quiet_libraries()
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    demo_adapters: Path | None = None
    say(f"loading {source.name} ({source.kind}) on {device}")
    common: dict[str, Any] = {"torch_dtype": dtype}
    out_of_memory = False
    failure: str | None = None
    checkpoint: Any = None
    pipe: Any = None
    sha256: str | None = None
    if not allow_pickle and source.kind in ("folder", "hub"):
        common["use_safetensors"] = True  # diffusers then refuses .bin weights instead of unpickling them
    try:
        if source.kind == "demo" and trained is not None:
            from spatiora_tui.engine.demo import TRAINED_ADAPTERS

            pipe, checkpoint, hashing = _load_single_file(trained, settings, common, cache_dir, say)
            sha256 = hashing.result()
            demo_adapters = TRAINED_ADAPTERS
        elif source.kind == "demo":
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
            pipe, checkpoint, hashing = _load_single_file(Path(source.value), settings, common, cache_dir, say)
            _check_complete(pipe, source.name)
            sha256 = hashing.result()
        else:
            pipe = _load_from_hub(source.value, common)
        if getattr(pipe, "safety_checker", None) is not None:
            # Local, private design work: the NSFW filter blacks out architecture renders at random.
            pipe.safety_checker = None
        failpoints.hit("load")
        family = checkpoint.variant.family if checkpoint is not None else detect_family(pipe)
        offload = place(pipe, device, settings, family, say)  # where a model too big for the GPU runs out of memory
    except EngineError as exc:
        failure = str(exc)
    except Exception as exc:
        if is_out_of_memory(exc):
            out_of_memory = True
        else:
            failure = _explain_load_failure(source, exc)
    if out_of_memory or failure is not None:
        # After the except block, whose traceback held the half-loaded weights: nothing of a
        # failed load stays in memory.

        pipe = None
        release_memory(device == "cuda")
        if failure is not None:
            raise EngineError(failure)
        where = "GPU memory" if device == "cuda" else "memory"
        hint = '[model] offload = "model" (or "sequential"), ' if device == "cuda" else ""
        raise EngineOOM(
            f'out of {where} while loading {source.name}; try {hint}dtype = "fp16", a smaller model, or close other programs'
        )

    pipe.set_progress_bar_config(disable=True)
    info = ModelInfo(
        name=f"{source.name} (random weights)" if source.kind == "demo" and trained is None else source.name,
        source=settings.source,
        kind=source.kind,
        family=family,
        variant=checkpoint.variant.label if checkpoint is not None else "",
        sha256=sha256,
        device=device,
        dtype=dtype_label(dtype),
        random_weights=source.kind == "demo" and trained is None,
        offload=offload,
    )
    return pipe, info, demo_adapters


def module_bytes(module: Any) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) if module is not None else 0


def choose_offload(
    setting: str, device: str, free_mb: float | None, weights_mb: float, largest_mb: float, family: str
) -> str:
    """The offload mode a load uses: `setting` itself, or for "auto" the least offload that fits
    the free VRAM (all on the GPU, else one component at a time, else layer by layer). Off a CUDA
    device there is nothing to offload to: "none", and an explicit mode is an error."""
    if device != "cuda":
        if setting not in ("auto", "none"):
            raise EngineError(f'[model] offload = "{setting}" needs a CUDA GPU; this runs on {device}: use "auto"')
        return "none"
    if setting != "auto":
        return setting
    working = FAMILIES.get(family, FAMILIES["sdxl"]).working_mb  # an unknown family: plan for the most
    if free_mb is None or free_mb >= weights_mb + working:
        return "none"
    if free_mb >= largest_mb + working:
        return "model"
    return "sequential"


def place(pipe: Any, device: str, settings: ModelSettings, family: str, say: Callable[[str], object]) -> str:
    """Put the pipeline on `device` as [model] offload says; returns the mode used. VAE tiling
    and slicing as [model] asks."""
    import torch

    components = [getattr(pipe, name, None) for name in ("unet", "text_encoder", "text_encoder_2", "vae")]
    sizes = [module_bytes(c) / MB for c in components]
    free_mb = None
    if device == "cuda" and settings.offload == "auto":
        free_mb = torch.cuda.mem_get_info()[0] / MB
    mode = choose_offload(settings.offload, device, free_mb, sum(sizes), max(sizes), family)
    if mode == "none":
        pipe.to(device)
    else:
        why = f" ({free_mb:,.0f} MB free for {sum(sizes):,.0f} MB of weights)" if free_mb is not None else ""
        say(f"offload: {mode}{why}")
        pipe.to("cpu")  # the offload's home; it brings each part to the GPU when it runs
        if mode == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif mode == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.enable_group_offload(
                onload_device=torch.device(device), offload_type="block_level", num_blocks_per_group=1, use_stream=True
            )
    if settings.vae_tiling:
        pipe.vae.enable_tiling()
    if settings.vae_slicing:
        pipe.vae.enable_slicing()
    return mode


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
        return f"{source.name} has no .safetensors weights for every part (only pickle .bin files); {PICKLE_REFUSED}"
    mismatch = re.search(
        r"because (\S+) expected shape torch.Size\((\[[^\]]*\])\), but got torch.Size\((\[[^\]]*\])\)", text
    )
    if source.kind == "single_file" and mismatch:
        name, expected, got = mismatch.groups()
        return (
            f"{source.name}: its tensors do not fit the architecture it was loaded as ({name} is {got}, "
            f"the architecture has {expected}), so it is a model of another size; put its diffusers config "
            f"folder beside it as {source.name}.config/ (or set [model] config), or pin [model] variant"
        )
    if source.kind == "single_file" and "meta tensor" in text:
        return (
            f"{source.name} lacks weights the architecture needs (diffusers found no data for some of them); "
            "the file is incomplete or of another architecture: download it again"
        )
    return f"could not load model {source.name!r} ({source.kind}): {text}"
