"""The one building block every part of the network shares: a small MLP."""

from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Module):
    """Linear -> ReLU -> Dropout per hidden layer, then an optional output Linear.

    Args:
        d_in: Input width.
        hidden: Hidden layer widths (may be empty).
        d_out: Width of a final linear layer without activation; None to end on the last hidden.
        dropout: Dropout after each hidden activation.
    """

    def __init__(
        self, d_in: int, hidden: tuple[int, ...], d_out: int | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(d_in, width), nn.ReLU(), nn.Dropout(dropout)]
            d_in = width
        if d_out is not None:
            layers.append(nn.Linear(d_in, d_out))
        self.net = nn.Sequential(*layers)
        self.d_out = d_out if d_out is not None else d_in

    def forward(self, x: Tensor) -> Tensor:  # [R, d_in] -> [R, d_out]
        return self.net(x)
