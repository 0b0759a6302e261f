"""RF-Solver-Edit's and FireFlow's editing loops, transcribed for parity tests (not coupled_sde).

From the authors' ``sampling.py`` (``denoise_rf_solver`` / ``denoise_fireflow``, run with
``inverse=True`` under the source and then ``inverse=False`` under the target) and their
``SingleStreamBlock`` feature store (``layers.py``): with ``inject > 0`` the value projections of the
given single-stream ``blocks`` are keyed by ``(t, second_order, block)``, ``t`` the interval's noisier
end (``t_prev`` when inverting, ``t_curr`` when editing), stored during the inversion's last
``inject`` steps and read back in the edit's first ``inject``. It talks to the diffusers transformer
through plain forward hooks on ``to_v``.
"""

import torch
from reference_flux_sync_sde import _velocity  # unpacked u(x, sigma, c), guidance embedding 1.0


@torch.no_grad()
def reference_ode_edit(pipe, flux, x0, n, start, kind, source, target, inject=0, blocks=()):
    """The edit and the number of features stored; ``kind`` is ``"rf_solver"`` or ``"fireflow"``."""
    msl = flux.max_sequence_length
    timesteps = [float(s) for s in flux.schedule.grid(n, x0.shape[1:]).times][start:]
    h, w = x0.shape[-2:]
    ids = pipe._prepare_latent_image_ids(x0.shape[0], h // 2, w // 2, "cpu", pipe.transformer.dtype)
    info, feature = {}, {}

    def hook(block):
        def tap(module, inputs, v):
            if not info["inject"]:
                return v
            name = f"{info['t']}_{info['second_order']}_{block}_single_V"
            if info["inverse"]:
                feature[name] = v.clone()
                return v
            return feature[name] if name in feature else v  # FireFlow: a feature never stored is not injected

        return tap

    handles = [pipe.transformer.single_transformer_blocks[b].attn.to_v.register_forward_hook(hook(b)) for b in blocks]

    def denoise(img, prompt, steps, inverse):
        embeds, pooled, text_ids = pipe.encode_prompt(prompt, max_sequence_length=msl)
        inject_list = [True] * inject + [False] * (len(steps[:-1]) - inject)
        if inverse:
            steps, inject_list = steps[::-1], inject_list[::-1]
        next_step_velocity = None
        for i, (t_curr, t_prev) in enumerate(zip(steps[:-1], steps[1:])):
            info.update(t=t_prev if inverse else t_curr, inverse=inverse, second_order=False, inject=inject_list[i])
            if kind == "fireflow" and next_step_velocity is not None:
                pred = next_step_velocity
            else:
                pred = _velocity(pipe, img, t_curr, embeds, pooled, text_ids, ids)
            img_mid = img + (t_prev - t_curr) / 2 * pred
            info["second_order"] = True
            pred_mid = _velocity(pipe, img_mid, t_curr + (t_prev - t_curr) / 2, embeds, pooled, text_ids, ids)
            if kind == "fireflow":
                next_step_velocity = pred_mid
                img = img + (t_prev - t_curr) * pred_mid
            else:
                first_order = (pred_mid - pred) / ((t_prev - t_curr) / 2)
                img = img + (t_prev - t_curr) * pred + 0.5 * (t_prev - t_curr) ** 2 * first_order
        return img

    try:
        z = denoise(x0, source, timesteps, inverse=True)
        return denoise(z, target, timesteps, inverse=False), len(feature)
    finally:
        for handle in handles:
            handle.remove()
