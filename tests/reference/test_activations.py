"""NumPy activations against torch.nn.functional and autograd, float64."""
import warnings
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.reference import ACTIVATIONS, get_activation
from cnnkit.reference import activations as A
from cnnkit.registry import CnnkitError

TOL = dict(rtol=1e-10, atol=1e-12)
T = torch.from_numpy

# name -> (our forward, our backward, torch function)
CASES = {
    "sigmoid": (A.sigmoid, A.sigmoid_backward, torch.sigmoid),
    "tanh": (A.tanh, A.tanh_backward, torch.tanh),
    "relu": (A.relu, A.relu_backward, F.relu),
    "leaky_relu": (A.leaky_relu, A.leaky_relu_backward, F.leaky_relu),
    "leaky_relu(0.2)": (partial(A.leaky_relu, negative_slope=0.2),
                        partial(A.leaky_relu_backward, negative_slope=0.2), partial(F.leaky_relu, negative_slope=0.2)),
    "elu": (A.elu, A.elu_backward, F.elu),
    "elu(0.5)": (partial(A.elu, alpha=0.5), partial(A.elu_backward, alpha=0.5), partial(F.elu, alpha=0.5)),
    "gelu": (A.gelu, A.gelu_backward, F.gelu),
    "gelu(tanh)": (partial(A.gelu, approximate="tanh"), partial(A.gelu_backward, approximate="tanh"),
                   partial(F.gelu, approximate="tanh")),
}


@pytest.mark.parametrize("name", CASES)
def test_forward_and_backward(name):
    fwd, bwd, ref = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5)) * 3
    xt = T(x).requires_grad_()
    y = ref(xt)
    np.testing.assert_allclose(fwd(x), y.detach().numpy(), **TOL)
    dout = rng.standard_normal(x.shape)
    y.backward(T(dout))
    np.testing.assert_allclose(bwd(dout, x), xt.grad.numpy(), **TOL)


def test_sigmoid_is_stable_for_huge_inputs():
    x = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # no overflow warning from e^1000
        y = A.sigmoid(x)
    np.testing.assert_allclose(y, torch.sigmoid(T(x)).numpy(), rtol=1e-12, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A.elu(x)


def test_name_table():
    assert {"sigmoid", "tanh", "relu", "leaky_relu", "elu"} <= set(ACTIVATIONS)
    assert get_activation("relu") == (A.relu, A.relu_backward)
    with pytest.raises(CnnkitError, match="Did you mean 'relu'"):
        get_activation("reluu")
