"""Command line: `python -m aigc_studio {text,image,audio,serve} ...`.

    python -m aigc_studio text "Write a haiku about rain" --temperature 0.9 --seed 1
    python -m aigc_studio image "a small red circle" --steps 20 --seed 3
    python -m aigc_studio audio "Hello there" --speed 1.2
    python -m aigc_studio serve --preset offline --threads 1
Images and audio are written to the output folder with their recipe embedded.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from aigc_studio import logs
from aigc_studio.actions import text as text_actions
from aigc_studio.config import PRESETS, Settings
from aigc_studio.params import ParamError
from aigc_studio.studio import PARAMS_TYPES, Studio


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aigc_studio", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=PRESETS, help="auto (default), hub or offline")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"))
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is best on a busy 2-core machine)")
    commands = parser.add_subparsers(dest="command", required=True)
    for modality, params_type in PARAMS_TYPES.items():
        sub = commands.add_parser(modality, help=f"generate {modality}")
        sub.add_argument("prompt")
        sub.add_argument("--model", help="catalog id (default: the preset's)")
        for field in dataclasses.fields(params_type):
            sub.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, default=None,
                             help=f"{field.metadata['help']} (default {field.default})")
    commands.add_parser("serve", help="launch the web UI")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure()
    settings = Settings.from_env()
    for name in ("preset", "device", "dtype", "threads"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    studio = Studio(settings)
    if args.command == "serve":
        from aigc_studio.ui import build_demo, launch  # the only path that needs gradio

        launch(build_demo(studio), studio)
        return 0
    knobs = {f.name: getattr(args, f.name) for f in dataclasses.fields(PARAMS_TYPES[args.command])}
    try:
        if args.command == "text":
            request = text_actions.GenerateText(args.prompt, studio.params("text", args.model, **knobs), args.model)
            for update in text_actions.generate(studio, request):
                if update.status:
                    print(update.status, file=sys.stderr)
            print(update.text)
            return 0
        make = studio.image if args.command == "image" else studio.audio
        result = make(args.prompt, args.model, **knobs)
    except (ParamError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(studio.save(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
