"""Unknown command-line options: an error that names the option the user most likely meant.

Click's own hint is the closest spelling (``difflib`` with a 0.6 cutoff), which for ``--num-images`` is
``--init-image``: an option that does something else entirely, shown as the only "possible option" (issue 13).
An unknown option stays an error (exit code 2, nothing runs); the hint here comes from, in order: the same name
spelt another way (``--init_image``), the word other image tools use for an option we have (``--num-images`` is
``--n``), an option the word begins (``--neg``), then a close spelling with a stricter cutoff than click's
(``--sed`` is ``--seed``); tests/integration/test_cli_commands.py::test_unknown_options_suggest_the_option_meant.
Unknown commands likewise (``studiolo models rm``: "Did you mean 'remove'?").
"""

from __future__ import annotations

import difflib
from typing import Any

# typer (>= 0.29) parses with its own copy of click; its exception and context types live here.
from typer import _click
from typer.core import TyperGroup, TyperOption

# What other tools (diffusers, AUTOMATIC1111, ComfyUI, other CLIs) call an option, by our option's name.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "--n": ("num-images", "num-images-per-prompt", "n-images", "images", "count", "batch-size", "number", "num"),
    "--size": ("width", "height", "resolution", "dimensions", "wxh"),
    "--guidance": ("cfg", "cfg-scale", "guidance-scale", "scale"),
    "--negative": ("negative-prompt", "neg-prompt", "np"),
    "--steps": ("num-inference-steps", "inference-steps", "num-steps", "step"),
    "--sampler": ("sampler-name", "sampling-method"),
    "--scheduler": ("schedule", "schedule-type", "sigmas"),
    "--variation-seed": ("subseed", "var-seed"),
    "--variation-strength": ("subseed-strength", "var-strength"),
    "--out": ("output", "output-dir", "outdir", "out-dir", "output-path", "save-dir"),
    "--init-image": ("image", "input", "input-image", "img", "init-img"),
    "--mask": ("mask-image", "mask-img"),
    "--factor": ("scale-factor", "upscale-by", "upscaling-resize", "resize"),
    "--strength": ("denoising-strength", "denoise", "denoising"),
    "--aspect-ratio": ("ratio", "ar", "aspect"),
    "--model": ("checkpoint", "ckpt", "model-id"),
}
# The same for commands: what other tools call a command we have.
COMMAND_SYNONYMS: dict[str, tuple[str, ...]] = {
    "generate": ("gen", "txt2img", "img2img", "draw", "create", "run"),
    "serve": ("server", "start", "web"),
    "upscale": ("upscaler", "enlarge", "upres", "upsample", "extras", "resize"),
    "list": ("ls", "show"),
    "remove": ("rm", "delete", "del", "uninstall"),
    "pull": ("download", "install", "get", "fetch"),
    "import": ("add", "install", "load"),
    "default": ("set-default", "use"),
}
# Stricter than click's 0.6: "num-images" is 0.7 from "init-image", "sed" is 0.86 from "seed".
SPELLING_CUTOFF = 0.75


def _normal(option: str) -> str:
    return option.lstrip("-").lower().replace("_", "-")


def _options(command: Any) -> dict[str, str]:
    """The long options of ``command`` ("--seed"), each with its help text."""
    found: dict[str, str] = {"--help": "Show the command's options."}
    for param in getattr(command, "params", []):
        if isinstance(param, TyperOption):
            for name in [*param.opts, *param.secondary_opts]:
                if name.startswith("--"):
                    found[name] = param.help or ""
    return found


def suggest(typed: str, command: Any) -> list[str]:
    """The options of ``command`` that an unknown option ``typed`` most likely meant (at most three)."""
    options = _options(command)
    by_normal = {_normal(o): o for o in options}
    word = _normal(typed)
    if word in by_normal:
        return [by_normal[word]]
    meant = [o for o, words in SYNONYMS.items() if o in options and word in words]
    if meant:
        return meant
    begun = [o for n, o in by_normal.items() if word and n.startswith(word)]
    if 0 < len(begun) <= 3:
        return begun
    close = difflib.get_close_matches(word, list(by_normal), n=3, cutoff=SPELLING_CUTOFF)
    return [by_normal[c] for c in close]


def explain(exc: _click.exceptions.NoSuchOption) -> None:
    """Rewrite click's message in place: which option was meant and what it does, or only that it is unknown."""
    command = exc.ctx.command if exc.ctx is not None else None
    meant = suggest(exc.option_name, command) if command is not None else []
    helps = _options(command) if command is not None else {}
    message = f"No such option: {exc.option_name}."
    if meant:
        message += " Did you mean " + " or ".join(meant) + "?"
    if len(meant) == 1 and helps.get(meant[0]):
        message += f" {meant[0]}: {helps[meant[0]]}"
    exc.message = message
    exc.possibilities = None  # click's spelling-only list would be appended again


def suggest_command(typed: str, commands: list[str]) -> list[str]:
    """The commands that an unknown command ``typed`` most likely meant: synonyms, then commands it begins."""
    word = typed.lower()
    meant = [c for c, words in COMMAND_SYNONYMS.items() if c in commands and word in words]
    return meant or sorted(c for c in commands if word and c.startswith(word))


class SuggestingGroup(TyperGroup):
    """A command group whose unknown-option errors (its own and its subcommands') suggest the option meant, and
    whose unknown commands get the same treatment (``studiolo models rm``: "Did you mean 'remove'?")."""

    def resolve_command(
        self, ctx: _click.Context, args: list[str]
    ) -> tuple[str | None, _click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except _click.exceptions.UsageError as exc:
            # typer adds click's closest spellings ("Did you mean 'models'?"); add meaning where it found none.
            meant = suggest_command(args[0], list(self.commands)) if args else []
            if meant and "Did you mean" not in exc.message:
                exc.message = exc.message.rstrip(".") + ". Did you mean " + " or ".join(f"'{m}'" for m in meant) + "?"
            raise

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except _click.exceptions.NoSuchOption as exc:
            explain(exc)
            raise

    def invoke(self, ctx: _click.Context) -> Any:
        # A subcommand's options are parsed inside its group's invoke, so nested groups are covered here too.
        try:
            return super().invoke(ctx)
        except _click.exceptions.NoSuchOption as exc:
            explain(exc)
            raise
