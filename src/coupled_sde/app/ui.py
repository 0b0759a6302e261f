"""The Gradio page: inputs on the left (picture, a mask painter showing it, prompts, method and settings, seed), the edit,
its difference map, its cost and the all-methods comparison on the right.

Every request goes through one queue with one worker (``queue(default_concurrency_limit=1)``): a
second request while an edit runs waits its turn (the page shows its place in the queue) instead of
being dropped or of competing for the model. Long edits show the solver's progress bar
(``gr.Progress(track_tqdm=True)``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .editing import DEFAULT_CHOICE, AppEdit, compare_methods, mask_from_editor, method_settings, methods_for, run_edit
from .models import AppModel

__all__ = ["build_app", "gradio"]

ONE, COMPARE = "one method", "compare methods"


def gradio() -> Any:
    """The ``gradio`` module, or an ``ImportError`` naming the extra to install."""
    from .._optional import require

    require("gradio", "app")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: the app runs offline
    import gradio as gr

    return gr


def _prompt(gr: Any, model: AppModel, label: str, value: str, elem_id: str) -> Any:
    if model.conditions is not None:
        return gr.Dropdown(list(model.conditions), value=value, label=label, elem_id=elem_id)
    return gr.Textbox(value=value, label=label, elem_id=elem_id, lines=1)


def build_app(model: AppModel) -> Any:
    """The app's ``gradio.Blocks`` for ``model`` (loaded now, once, not per request)."""
    gr = gradio()
    backbone = model.backbone
    methods = methods_for(backbone)
    fields = {m: method_settings(backbone, m) for m in methods}
    first = model.examples[0] if model.examples else (None, "", "")
    examples_dir = Path(tempfile.mkdtemp(prefix="coupled-sde-app-"))

    with gr.Blocks(title="coupled-sde: sync-SDE image editing") as demo:
        gr.Markdown(
            "## Semantic editing with coupled SDEs\n"
            f"Model: **{model.title}**. {model.note} Paint on the image in the mask panel to restrict the edit "
            "to the painted area (no paint: the whole image may change)."
        )
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Row():
                    image = gr.Image(
                        label="image", type="pil", format="png", image_mode="RGB", sources=["upload", "clipboard"], height=300,
                        elem_id="input-image",
                    )  # fmt: skip
                    editor = gr.ImageEditor(
                        label="mask: paint where it may change",
                        type="pil",
                        format="png",
                        sources=[],
                        brush=gr.Brush(colors=["#ff3030"], color_mode="fixed"),
                        transforms=(),
                        height=300,
                        elem_id="mask-editor",
                    )
                with gr.Row():
                    source = _prompt(gr, model, "source (what the image shows)", first[1], "source-prompt")
                    target = _prompt(gr, model, "target (what it should show)", first[2], "target-prompt")
                negative_choices = [""] + list(model.conditions) if model.conditions is not None else None
                if negative_choices is not None:
                    negative = gr.Dropdown(negative_choices, value="", label="negative prompt (optional)", elem_id="negative-prompt")
                else:
                    negative = gr.Textbox(label="negative prompt (optional)", elem_id="negative-prompt")
                with gr.Row():
                    method = gr.Dropdown(methods, value=methods[0], label="method", elem_id="method")
                    seed = gr.Number(value=0, precision=0, label="seed", elem_id="seed")
                    mode = gr.Radio([ONE, COMPARE], value=ONE, label="mode", elem_id="mode")
                groups, inputs, names = {}, [], []
                for m in methods:
                    with gr.Group(visible=m == methods[0]) as group:
                        with gr.Row():
                            for f in fields[m]:
                                elem = f"setting-{m}-{f.name}"
                                if f.kind == "choice":
                                    c = gr.Dropdown(list(f.choices), value=f.default or f.choices[0], label=f.name, elem_id=elem)
                                else:
                                    c = gr.Number(
                                        value=f.default, precision=0 if f.kind == "int" else None, label=f.name, elem_id=elem
                                    )
                                inputs.append(c)
                                names.append((m, f.name))
                    groups[m] = group
                run = gr.Button("Edit", variant="primary", elem_id="run-button")
                if model.examples:
                    paths = []
                    for i, (picture, src, tgt) in enumerate(model.examples):
                        path = examples_dir / f"example-{i}.png"
                        picture.save(path)
                        paths.append([str(path), src, tgt])
                    gr.Examples(paths, inputs=[image, source, target], label="shipped examples")
            with gr.Column(scale=1):
                with gr.Row():
                    output = gr.Image(label="edit", type="pil", format="png", interactive=False, height=300, elem_id="edit-output")
                    difference = gr.Image(
                        label="difference |edit - source|", type="pil", format="png", interactive=False, height=300,
                        elem_id="difference-output",
                    )  # fmt: skip
                info = gr.Markdown(elem_id="edit-info")
        with gr.Row(visible=False) as compare_row:
            gallery = gr.Gallery(label="every method, same seed", format="png", columns=4, height=300, elem_id="compare-output")
            gallery_diff = gr.Gallery(label="their differences", format="png", columns=4, height=300, elem_id="compare-difference")

        def show(selected: str) -> list[Any]:
            return [gr.update(visible=m == selected) for m in methods]

        method.change(show, inputs=method, outputs=list(groups.values()))
        mode.change(lambda m: gr.update(visible=m == COMPARE), inputs=mode, outputs=compare_row)

        tracker = gr.Progress(track_tqdm=True)  # Gradio finds it as a default value: the solver's tqdm bar shows on the page

        # the mask painter shows the image to paint on (its strokes are the mask; a new image clears them)
        image.change(lambda picture: picture, inputs=image, outputs=editor)

        def edit(picture, editor_value, src, tgt, neg, chosen, seed_value, mode_value, *values, progress=tracker):
            if picture is None:
                raise gr.Error("upload an image or pick an example first")
            if src in (None, "") or tgt in (None, ""):
                raise gr.Error("give a source and a target prompt")
            mask = mask_from_editor(editor_value)
            seed_int = int(seed_value or 0)
            try:
                if mode_value == COMPARE:
                    edits = compare_methods(
                        model, picture, src, tgt, seed=seed_int, mask=mask, negative_prompt=neg or None,
                        on_method=lambda i, n, m: progress((i, n), desc=m),
                    )  # fmt: skip
                    return _compare_outputs(edits, seed_int)
                settings = {name: v for (m, name), v in zip(names, values) if m == chosen and v not in (None, DEFAULT_CHOICE)}
                for key in ("steps", "start", "n_max", "n_min", "n_avg"):
                    if key in settings:
                        settings[key] = int(settings[key])
                result = run_edit(
                    model, picture, src, tgt, chosen, seed=seed_int, mask=mask, negative_prompt=neg or None, progress=True,
                    **settings,
                )  # fmt: skip
            except (ValueError, TypeError, FloatingPointError, RuntimeError) as e:
                from ..commands._runtime import one_line

                raise gr.Error(one_line(e)) from None
            return result.picture, result.difference, _describe(result, seed_int, mask is not None), None, None

        run.click(
            edit,
            inputs=[image, editor, source, target, negative, method, seed, mode, *inputs],
            outputs=[output, difference, info, gallery, gallery_diff],
            concurrency_limit=1,
        )
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo


def _describe(result: AppEdit, seed: int, masked: bool) -> str:
    where = "inside the painted mask" if masked else "whole image"
    return (
        f"**{result.method}**, seed {seed}, {where}: **{result.model_calls} model calls** "
        f"({result.model_evaluations} evaluations), **{result.seconds:.2f} s**. "
        f"Difference map: black = unchanged, yellow = {result.max_difference}/255 (its largest change).\n\n"
        f"Settings: `{', '.join(f'{k}={v}' for k, v in result.settings.items())}`"
    )


def _compare_outputs(edits: list[AppEdit], seed: int) -> tuple[Any, ...]:
    pictures = [(e.picture, f"{e.method}: {e.model_calls} calls, {e.seconds:.2f} s") for e in edits]
    diffs = [(e.difference, f"{e.method}: max {e.max_difference}/255") for e in edits]
    lines = "\n".join(f"- {e.summary()}" for e in edits)
    text = f"Every method at this model's defaults, seed {seed}:\n\n{lines}"
    return None, None, text, pictures, diffs
