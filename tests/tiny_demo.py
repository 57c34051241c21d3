"""A tiny, randomly initialised demo model saved the way training exports it (weights + JSON config).

Like tests/tiny_pipeline.py for diffusers: the product's own loading code reads it back, so the demo engine
is testable on a checkout without the trained weights.
"""

from __future__ import annotations

import json
from pathlib import Path


def make_tiny_demo_weights(folder: Path, seed: int = 0) -> Path:
    """Write ``studiolo-demo.safetensors`` + ``.json`` under ``folder`` and return the weights path."""
    import torch
    from safetensors.torch import save_file

    from studiolo.engines.demo.model import DemoConfig, DemoModel

    config = DemoConfig(
        vocab=["a", "at", "blue", "dusk", "house", "lighthouse", "night", "red", "square"],
        max_tokens=8,
        text_dim=16,
        text_layers=1,
        text_heads=2,
        channels=(8, 16, 16),
        blocks=1,
        heads=2,
        cond_dim=16,
    )
    torch.manual_seed(seed)
    model = DemoModel(config)
    with torch.no_grad():
        for parameter in model.parameters():
            # Training starts the output layers at zero; a model that never trained would then ignore
            # the prompt entirely, so give every zero tensor random values too.
            if not parameter.any():
                parameter.normal_(0.0, 0.2)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "studiolo-demo.safetensors"
    save_file({k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}, str(weights))
    weights.with_suffix(".json").write_text(json.dumps(config.to_dict()))
    return weights
