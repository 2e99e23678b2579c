"""Typed API functions generated from the knob dataclasses.

Gradio (the HTTP API, gradio_client) and the MCP server read an endpoint's real signature
and its Google-style docstring: the parameter names, types, defaults and their help. Each
knob's argument (its type, `None` default, range and help) is written once, in params.py;
`endpoint()` builds a plain function with that signature (`inspect.Signature`), those
annotations and that docstring around a `run(**arguments)`, so adding a knob to a
dataclass adds it to every endpoint that lists the dataclass's knobs.

    generate_text = endpoint("generate_text", "Generate text ...",
                             [Arg("prompt", str, "what to answer", REQUIRED), *knob_args(TextParams)],
                             "The answer so far.", run_generate_text, Iterator[str])
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal

from aigc_studio import params as knobs

REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True)
class Arg:
    """One endpoint argument: its name, type annotation, help and default (REQUIRED: none)."""

    name: str
    annotation: Any
    doc: str
    default: Any = None


def knob_doc(params_type: type, name: str) -> str:
    """'0-2. Divides the logits: ...' ('-1 to 2147483647. ...' below zero) from the knob's range
    and help; choices are listed. MCP clients read the range in the tool's description."""
    meta = knobs.spec(params_type, name)
    help_text = meta["help"]
    if meta["choices"]:
        return f"one of {', '.join(map(str, meta['choices']))}. {help_text}"
    if meta["low"] is None or isinstance(meta["default"], (bool, str)):
        return help_text
    low, high = (int(v) if isinstance(meta["default"], int) else f"{v:g}" for v in (meta["low"], meta["high"]))
    return f"{low}-{high}. {help_text}" if meta["low"] >= 0 else f"{low} to {high}. {help_text}"


def knob_annotation(params_type: type, name: str) -> Any:
    """The knob's type, or a Literal of its choices; None allowed (the model's recommendation)."""
    meta = knobs.spec(params_type, name)
    kind = Literal[tuple(meta["choices"])] if meta["choices"] else type(meta["default"])
    return kind | None


def knob_args(params_type: type, names=None, annotations: dict | None = None, docs: dict | None = None) -> list[Arg]:
    """Arguments for knobs of params_type (all its fields in order, or `names`), each `None`
    by default. annotations / docs: per-name overrides (an endpoint that has always typed a
    knob as plain text keeps doing so)."""
    names = [f.name for f in dataclasses.fields(params_type)] if names is None else list(names)
    annotations, docs = annotations or {}, docs or {}
    return [Arg(name, annotations.get(name, knob_annotation(params_type, name)),
                docs.get(name, knob_doc(params_type, name))) for name in names]


def split_knobs(params_type: type, before: int) -> tuple[list[str], list[str]]:
    """(the first `before` knob names, the rest): the knobs an endpoint shipped with come before
    its later arguments (`model`, ...), every knob added since after them, so positional callers
    keep working and a new field joins the endpoint at its end."""
    names = [f.name for f in dataclasses.fields(params_type)]
    return names[:before], names[before:]


def docstring(summary: str, args: list[Arg], returns: str) -> str:
    lines = [summary.strip(), "", "Args:"]
    lines += [f"    {arg.name}: {arg.doc}" for arg in args]
    lines += ["Returns:", f"    {returns}"]
    return "\n".join(lines)


def endpoint(name: str, summary: str, args: list[Arg], returns: str, run: Callable[..., Any],
             return_annotation: Any = inspect.Signature.empty) -> Callable[..., Any]:
    """A function called `name` whose signature, annotations and docstring are `args`'s, that
    calls run(**arguments) with every argument (defaults filled in). It is a generator, an async
    generator or a coroutine function when run is one, as Gradio streams by the function's kind."""
    parameters = [inspect.Parameter(arg.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=arg.default,
                                    annotation=arg.annotation) for arg in args]
    signature = inspect.Signature(parameters, return_annotation=return_annotation)

    def arguments(call_args, call_kwargs) -> dict:
        bound = signature.bind(*call_args, **call_kwargs)
        bound.apply_defaults()
        return bound.arguments

    if inspect.isasyncgenfunction(run):
        async def function(*call_args, **call_kwargs):
            async for item in run(**arguments(call_args, call_kwargs)):
                yield item
    elif inspect.isgeneratorfunction(run):
        def function(*call_args, **call_kwargs):
            yield from run(**arguments(call_args, call_kwargs))
    elif inspect.iscoroutinefunction(run):
        async def function(*call_args, **call_kwargs):
            return await run(**arguments(call_args, call_kwargs))
    else:
        def function(*call_args, **call_kwargs):
            return run(**arguments(call_args, call_kwargs))

    function.__name__ = function.__qualname__ = name
    function.__signature__ = signature
    function.__annotations__ = {**{arg.name: arg.annotation for arg in args},
                                **({} if return_annotation is inspect.Signature.empty else {"return": return_annotation})}
    function.__doc__ = docstring(summary, args, returns)
    return function
