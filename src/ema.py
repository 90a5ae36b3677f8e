"""Exponential moving average of the trainable weights (`train.ema`): evaluated and saved in place of the raw ones."""

from __future__ import annotations

import contextlib

import torch


class EMA:
    """Shadow copies of the trainable parameters, updated after every optimizer step with one fused op (no host
    sync). The decay ramps up as min(decay, (1 + step) / (10 + step)) so early, random weights fade fast."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - d)

    @contextlib.contextmanager
    def applied(self):
        """The model holds the averaged weights inside the block (which gets the raw ones), its own ones after it."""
        with torch.no_grad():
            backup = [p.detach().clone() for p in self.params]
            torch._foreach_copy_([p.data for p in self.params], self.shadow)
        try:
            yield backup
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.params], backup)

    @torch.no_grad()
    def load_raw(self, weights: list[torch.Tensor]) -> None:
        """Put raw (not averaged) weights, as `applied` handed them out, back into the model (resume)."""
        torch._foreach_copy_([p.data for p in self.params], [w.to(p.device) for w, p in zip(weights, self.params)])
