"""The application's keys: one table gives each action its footer label, its tooltip and its
entry in the command palette; its default key is config.py's KeySettings' (config.toml's `[keys]`
remaps them by the same names)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding, BindingType

from spatiora_tui.config import KeySettings

_DEFAULTS = KeySettings()


@dataclass(frozen=True)
class Key:
    action: str  # also the binding's id and its [keys] name
    label: str  # in the footer
    tooltip: str
    command: str = ""  # its title in the command palette ("" for none)
    # A priority binding acts before the focused widget sees the key. Generate and cancel are
    # not: their key then reaches the focused field's queue behind the characters typed before
    # it, so a fast typist (or an SSH burst) generates with all of them.
    priority: bool = True

    @property
    def key(self) -> str:
        """Its default key (KeySettings'; the App's keymap applies config.toml's)."""
        return str(getattr(_DEFAULTS, self.action))


KEYS = (
    Key("generate", "Generate", "Generate with the prompt pane's settings", "Generate", priority=False),
    Key("cancel", "Cancel", "Cancel the running generation", "Cancel generation", priority=False),
    Key("queue", "Queue", "See the queued jobs: move, cancel, retry, pause and resume them", "Queue"),
    Key("next_task", "Next task", "Switch to the next task mode", "Next task mode"),
    Key("history", "History", "Browse the images", "History"),
    Key("save", "Save again", "Save every image whose save failed again (shown when one did)"),
    Key("models", "Model", "Pick the base model from the checkpoints in your folders", "Model"),
    Key(
        "restart_engine",
        "Restart engine",
        "Start your engine again, or reconnect to it, after it stopped (shown while it is down)",
    ),
    Key("quit", "Quit", "Quit Spatiora"),
)

#: Binding ids, which are also the [keys] names in config.toml.
KEY_ACTIONS = tuple(key.action for key in KEYS)


def bindings() -> list[BindingType]:
    """The App's bindings, from the table (ctrl+c, Textual's own, says how to quit)."""
    table: list[BindingType] = [
        Binding(k.key, k.action, k.label, id=k.action, priority=k.priority, tooltip=k.tooltip) for k in KEYS
    ]
    return [*table, Binding("ctrl+c", "help_quit", show=False, system=True)]
