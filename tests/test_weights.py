import numpy as np
import pytest

from src.errors import UserError
from src.weights import pos_weight


def test_modes():
    Y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]])  # pos 2, 1, 0
    assert pos_weight(Y, "balanced").tolist() == [1.0, 3.0, 4.0]
    assert np.allclose(pos_weight(Y, "sqrt"), np.sqrt([1.0, 3.0, 4.0]))
    assert pos_weight(Y, "none").tolist() == [1.0, 1.0, 1.0]
    assert pos_weight(Y, "balanced", clip=2.5).tolist() == [1.0, 2.5, 2.5]
    with pytest.raises(UserError):
        pos_weight(Y, "inverse")


def test_uses_only_the_rows_given():
    Y = np.zeros((10, 1), int)
    Y[:5] = 1
    assert pos_weight(Y[:6], "balanced")[0] == pytest.approx(1 / 5)
