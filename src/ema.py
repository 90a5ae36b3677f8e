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

    def state_dict(self) -> list[torch.Tensor]:
        return [s.cpu() for s in self.shadow]

    def load_state_dict(self, state: list[torch.Tensor]) -> None:
        if len(state) != len(self.shadow):
            raise ValueError(f"EMA state has {len(state)} tensors, the model {len(self.shadow)}")
        with torch.no_grad():
            for s, saved in zip(self.shadow, state):
                s.copy_(saved)
