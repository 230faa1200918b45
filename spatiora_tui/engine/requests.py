"""A request checked as every engine checks it: task_for() resolves the task with the request's
overrides, check_request() also reads and checks its init image. Every front end runs
check_request() before it queues a request (Session.submit does), so the CLI and the TUI refuse
the same things in the same words, before anything waits or pays for a model load.

Its own module, not engine/api.py's: the init image's checks (engine/init_image.py) use the
contract's types, and the contract does not import them back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spatiora_tui.engine.api import EngineError, GenerationRequest

if TYPE_CHECKING:
    from spatiora_tui.config import Settings, TaskSettings


def task_for(settings: Settings, request: GenerationRequest) -> TaskSettings:
    """The task a request runs as: the task's settings with the request's overrides, each checked
    like the config file's (unknown task, steps, size, scheduler...); EngineError naming the fault.
    Every engine resolves requests here, so they refuse the same things in the same words."""
    from spatiora_tui.config import ConfigError, task_with_overrides  # config imports the previews

    try:
        return task_with_overrides(
            settings.task(request.task),
            steps=request.steps,
            guidance=request.guidance,
            width=request.width,
            height=request.height,
            negative_prompt=request.negative_prompt,
            scheduler=request.scheduler,
        )
    except ConfigError as exc:
        raise EngineError(str(exc)) from None


def check_request(settings: Settings, request: GenerationRequest) -> TaskSettings:
    """task_for(), and the init image read and checked (engine/init_image.py): what a caller runs
    before it queues a request or pays for a model load; EngineError naming the fault."""
    from spatiora_tui.engine.init_image import init_for

    task = task_for(settings, request)
    init_for(request, task)
    return task
