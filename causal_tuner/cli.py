"""The ``causal-tuner`` command line.

Subcommands live beside the code they drive and are imported only when used, so
``causal-tuner --help`` stays fast. To add one, add a line to ``_SUBCOMMANDS``:
``"name": ("module.path", "click_object_name")``.
"""

from __future__ import annotations

import importlib

import click

_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("causal_tuner.tuning_demo", "demo"),
    "paper-demo": ("causal_tuner.demo", "demo"),
    "discover": ("causal_tuner.discovery", "discover_command"),
    "perfdb": ("perfdb.cli", "perfdb"),
    "search": ("simulator.cli_search", "search"),
    "replay": ("simulator.cli_replay", "replay"),
}


class _LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _SUBCOMMANDS:
            module_name, attr = _SUBCOMMANDS[cmd_name]
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{module_name}.{attr} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="causal-tuner")
def main() -> None:
    """Find and keep the best serving configuration of an LLM inference engine."""


if __name__ == "__main__":  # pragma: no cover
    main()
