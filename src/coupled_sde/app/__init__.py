"""``coupled-sde app``: a web app to edit images interactively (the ``app`` extra: Gradio).

Upload an image or pick a shipped example, paint the area that may change, give the source and
target prompts (pickers for the shipped class-conditional models), choose a method and its
settings (each model's defaults filled in) and a seed: the page shows the edit, its difference map,
the model calls and seconds, or every method side by side on the same seed. It runs offline on the
shipped model by default and on FLUX.1 / Stable Diffusion given a folder or hub id.

* :mod:`coupled_sde.app.models` -- which models, and their picture conventions;
* :mod:`coupled_sde.app.editing` -- the computation (no Gradio needed: the API the page calls);
* :mod:`coupled_sde.app.ui` -- the page.

Gradio is imported only by :func:`build_app` / :func:`launch`.
"""

from __future__ import annotations

from typing import Any

from .editing import AppEdit, compare_methods, difference_map, mask_from_editor, method_settings, methods_for, run_edit
from .models import AppModel, app_model, app_models, default_model_name, hub_model, register_app_model

__all__ = [
    "AppEdit",
    "AppModel",
    "app_model",
    "app_models",
    "build_app",
    "compare_methods",
    "default_model_name",
    "difference_map",
    "hub_model",
    "launch",
    "mask_from_editor",
    "method_settings",
    "methods_for",
    "register_app_model",
    "run_edit",
]


def build_app(model: AppModel) -> Any:
    """The app's ``gradio.Blocks`` (see :mod:`coupled_sde.app.ui`)."""
    from .ui import build_app as build

    return build(model)


def launch(model: AppModel, host: str = "127.0.0.1", port: int | None = 7860, block: bool = True, quiet: bool = False) -> Any:
    """Serve the app on ``host:port`` (127.0.0.1: this machine only); returns the ``Blocks`` when not ``block``."""
    demo = build_app(model)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        show_error=True,
        quiet=quiet,
        prevent_thread_lock=not block,
    )
    return demo
