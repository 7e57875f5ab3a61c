"""Sub-command options made from a stage's declared parameters.

``@declared(Degrade)`` gives a command one option per field of the stage's
parameter model (:mod:`survey_denoise.pipeline.params`): the same name
(``z_target`` -> ``--z-target``), default and help as the pipeline config's
``stages.degrade.z_target``.  The values are checked by the model itself,
so the command and the config accept and refuse the same things, and the
command receives one checked ``params`` object.
"""

from __future__ import annotations

import functools
import typing
from pathlib import Path

import click
from pydantic import BaseModel, ValidationError

from ..pipeline.params import cli_fields
from .common import UserError


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _click_type(annotation) -> tuple[object, bool]:
    """(click type, is a flag) for a field's annotation; ``X | None`` is X."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)]), False
    if args and typing.get_origin(annotation) is not typing.Literal and len(args) == 1:
        return _click_type(args[0])
    if annotation is bool:
        return bool, True
    if annotation is Path:
        return click.Path(path_type=Path), False
    if annotation in (int, float, str):
        return annotation, False
    raise TypeError(f"no command-line option for a field of type {annotation!r}")


def declared(model: type[BaseModel], *, skip: tuple[str, ...] = ()):
    """Decorator: options for the fields of ``model``; the command gets ``params=model(...)``.

    Parameters
    ----------
    model : type[pydantic.BaseModel]
        A stage's parameter model.
    skip : tuple of str
        Fields the command sets another way (an argument, e.g. ``train KIND``);
        their values must then be passed in the command's own keyword of the same name.
    """
    fields = [f for f in cli_fields(model) if f not in skip]

    def decorate(func):
        @functools.wraps(func)
        def command(**kwargs):
            given = {f: kwargs.pop(f) for f in fields}
            given.update({f: kwargs[f] for f in skip if f in kwargs})
            kwargs["params"] = build(model, {k: v for k, v in given.items() if v is not None})
            return func(**kwargs)

        for name in reversed(fields):
            info = model.model_fields[name]
            kind, flag = _click_type(info.annotation)
            default = None if info.is_required() else info.get_default(call_default_factory=True)
            extra = {"is_flag": True} if flag else {"type": kind}
            opt = option_name(name)
            if flag and default:  # a switch that is on by default is turned off with --no-...
                opt = f"{opt}/--no-{opt[2:]}"
            command = click.option(opt, name, default=default,
                                   required=info.is_required(), show_default=default is not None,
                                   help=info.description, **extra)(command)
        return command

    return decorate


def build(model: type[BaseModel], values: dict) -> BaseModel:
    """``model(**values)``, its complaints as one :class:`UserError` naming the options."""
    try:
        return model.model_validate(values)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            where = ", ".join(option_name(str(p)) for p in error["loc"] if not str(p).startswith("function"))
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise UserError("; ".join(problems)) from None
