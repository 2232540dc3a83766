"""The book's small helpers in fastbp: the rest of ``common/functions.py``,
``numerical_gradient_2d``, ``shuffle_dataset`` and ``smooth_curve``."""
import numpy as np
import pytest

from fastbp.functions import (cross_entropy_error, identity_function, softmax, softmax_loss,
                              step_function, sum_squared_error)
from fastbp.gradient import numerical_gradient, numerical_gradient_2d
from fastbp.util import shuffle_dataset, smooth_curve


def test_identity_and_step_functions():
    x = np.array([-1.0, 0.0, 0.5, -0.0, np.inf])
    assert identity_function(x) is x
    s = step_function(x)
    assert s.tolist() == [0, 0, 1, 0, 1] and s.dtype == np.dtype(int)
    assert step_function(2.0) == 1 and step_function([[-1, 3]]).tolist() == [[0, 1]]


def test_sum_squared_error_is_half_the_sum_over_the_batch():
    y = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    t = np.array([[0, 1, 0], [1, 0, 0]])
    expected = 0.5 * (0.01 + 0.09 + 0.04 + 0.25 + 0.0625 + 0.0625)
    assert sum_squared_error(y, t) == pytest.approx(expected, rel=1e-15)


def test_softmax_loss_is_cross_entropy_of_the_softmax_with_the_books_epsilon():
    x = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 30.0]])
    t = np.array([0, 2])
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert softmax_loss(x, t) == -np.mean(np.log(p[[0, 1], t] + 1e-7))
    assert softmax_loss(x, t) == cross_entropy_error(softmax(x), t)
    assert softmax_loss(x, np.eye(3)[t]) == softmax_loss(x, t)


def test_numerical_gradient_2d_differentiates_each_row_on_its_own():
    X = np.array([[1.0, 2.0, -1.0], [0.5, -3.0, 2.0]])
    rows = []

    def f(row):
        rows.append(row.shape)
        return np.sum(row ** 2) + row[0] * row[2]

    g = numerical_gradient_2d(f, X)
    assert set(rows) == {(3,)}  # f sees one row at a time, as in the book
    expected = 2 * X + X[:, ::-1] * np.array([1, 0, 1])
    np.testing.assert_allclose(g, expected, rtol=1e-8)
    np.testing.assert_array_equal(X, [[1.0, 2.0, -1.0], [0.5, -3.0, 2.0]])  # restored
    x1 = np.array([1.0, -2.0])
    np.testing.assert_array_equal(numerical_gradient_2d(lambda v: np.sum(v ** 2), x1),
                                  numerical_gradient(lambda v: np.sum(v ** 2), x1))
    with pytest.raises(TypeError, match="x"):
        numerical_gradient_2d(f, np.array([[1, 2]]))


def test_shuffle_dataset_is_one_permutation_of_the_global_state():
    x = np.arange(24.0).reshape(6, 2, 2)
    t = np.arange(6)
    np.random.seed(3)
    xs, ts = shuffle_dataset(x, t)
    np.random.seed(3)
    order = np.random.permutation(6)
    np.testing.assert_array_equal(ts, order)
    np.testing.assert_array_equal(xs, x[order])
    assert xs.base is not x  # new arrays
    with pytest.raises(ValueError, match="x, t"):
        shuffle_dataset(x, t[:5])


def test_smooth_curve_is_the_books_kaiser_average():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(40).cumsum()
    w = np.kaiser(11, 2)
    w /= w.sum()
    # the padding the book uses: x[10], ..., x[1] before, x[-1], ..., x[-10] after
    padded = list(x[10:0:-1]) + list(x) + list(x[::-1][:10])
    expected = [sum(w[k] * padded[i + k] for k in range(11)) for i in range(5, 5 + len(x))]
    y = smooth_curve(x)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="x"):
        smooth_curve(x[:5])
