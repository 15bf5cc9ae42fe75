"""A griffe extension for the docs build: ``**fields: Unpack[SomeTypedDict]`` shown in full.

The checkout methods take their optional fields as ``**fields: Unpack[CheckoutFields]``, a
TypedDict declared once beside the request model. Type checkers and editors expand it; with
this extension the API reference does too: the signature lists each field as a keyword-only
argument (default ``None``), and the docstring gains an "Other Parameters" section made of the
fields' own docstrings. A TypedDict that cannot be found fails the build.
"""

from __future__ import annotations

from typing import Any

import griffe

__all__ = ["UnpackedFields"]


def _unpacked(parameter: griffe.Parameter) -> str | None:
    """The path of the TypedDict of ``**name: Unpack[TypedDict]``, or ``None``."""
    annotation = parameter.annotation
    if (
        parameter.kind is griffe.ParameterKind.var_keyword
        and isinstance(annotation, griffe.ExprSubscript)
        and isinstance(annotation.left, griffe.ExprName)
        and annotation.left.canonical_path.endswith(".Unpack")
        and isinstance(annotation.slice, griffe.ExprName)
    ):
        return annotation.slice.canonical_path
    return None


class UnpackedFields(griffe.Extension):
    """Replace a function's ``**name: Unpack[TypedDict]`` by the fields of the TypedDict."""

    def on_function(
        self,
        *,
        func: griffe.Function,
        loader: griffe.GriffeLoader,
        **kwargs: Any,  # noqa: ARG002 - the hook signature
    ) -> None:
        """Expand the unpacked TypedDict of *func*, if it has one."""
        parameters = list(func.parameters)
        path = _unpacked(parameters[-1]) if parameters else None
        if path is None:
            return
        try:
            fields = loader.modules_collection.get_member(path)
        except KeyError as exc:
            message = f"{func.path}: {path} not found, so **{parameters[-1].name} is not shown"
            raise griffe.GriffeError(message) from exc
        attributes = fields.attributes.items()
        func.parameters = griffe.Parameters(
            *parameters[:-1],
            *(
                griffe.Parameter(
                    name,
                    annotation=field.annotation,
                    kind=griffe.ParameterKind.keyword_only,
                    default="None",
                )
                for name, field in attributes
            ),
        )
        described = "\n".join(
            f"    {name}: {' '.join(field.docstring.value.split()) if field.docstring else ''}"
            for name, field in attributes
        )
        if func.docstring is not None:
            func.docstring.value = f"{func.docstring.value}\n\nOther Parameters:\n{described}"
