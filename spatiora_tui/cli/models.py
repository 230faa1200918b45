"""`spatiora models`: every checkpoint, LoRA and embedding in the user's folders, hashed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from spatiora_tui.cli.common import EXIT_OK, printable, status_printer
from spatiora_tui.config import Settings, user_cache_dir
from spatiora_tui.units import size_text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    models = sub.add_parser(
        "models",
        parents=[common],
        help="list the checkpoints, LoRAs and embeddings in your folders",
        description="Every checkpoint, LoRA and embedding in the folders of [paths] (an AUTOMATIC1111 or ComfyUI "
        "install included) and [adapters] dir: what each is, its size and its AUTOMATIC1111 hash. "
        "Hashes are computed once per file and cached.",
    )
    models.add_argument("--no-hash", action="store_true", help="skip hashing (files not hashed before show no hash)")
    models.add_argument("--json", dest="as_json", action="store_true", help="print JSON instead of a table")
    models.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from spatiora_tui.engine.adapters import AdapterCatalog
    from spatiora_tui.engine.demo import demo_adapter_dir
    from spatiora_tui.library.hashing import HashCache
    from spatiora_tui.library.listing import build_report

    status = status_printer()

    def progress(entry: Any) -> Callable[[int, int], None]:
        def show(done: int, total: int) -> None:
            if done < total:
                status(f"hashing {entry.name} ({total / 2**30:.1f} GB): {100 * done // total}%")
            else:
                status(None)

        return show

    adapter_dirs = [settings.adapter_dir]
    demo_adapters = demo_adapter_dir(settings.model.source, user_cache_dir())
    if demo_adapters is not None and demo_adapters.is_dir():
        adapter_dirs.append(demo_adapters)
    adapters = AdapterCatalog(adapter_dirs).available()
    hashes = None if args.no_hash else HashCache(user_cache_dir() / "hashes.json")
    report = build_report(settings, hashes, progress if sys.stderr.isatty() else None, adapters)
    status(None)
    if args.as_json:
        print(json.dumps([{**row.__dict__, "path": str(row.path)} for row in report.rows], indent=1))
        return EXIT_OK
    folders = report.folders
    for install in folders.installs:
        print(printable(f"{install.kind} install: {install.root}"))
    for missing in folders.missing:
        print(printable(f"warning: {missing} (named in [paths]) does not exist"))
    headings = {
        "checkpoint": ("Checkpoints", folders.checkpoints),
        "lora": ("LoRAs", (*adapter_dirs, *folders.loras)),
        "embedding": ("Embeddings", folders.embeddings),
    }
    for kind, (title, where) in headings.items():
        rows = [r for r in report.rows if r.kind == kind]
        shown = ", ".join(str(p) for p in where if p.is_dir()) or "no folder found"
        print(printable(f"\n{title} ({len(rows)}) in {shown}"))
        width = max([len(r.name) for r in rows] + [4])
        for row in rows:
            size = size_text(row.size)
            mark = "  " if row.ok else "✗ "
            extra = row.details or (f"shadowed by {row.shadowed_by}" if row.shadowed_by else "")
            print(
                printable(
                    f"  {mark}{row.name:<{width}}  {size:>7}  {row.short_hash or '-':<12}  {row.what}"
                    + (f" · {extra}" if extra else "")
                )
            )
    return EXIT_OK
