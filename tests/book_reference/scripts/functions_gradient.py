# The star exports of common.layers / common.functions / common.gradient / common.util.
import os
import sys
sys.path.append(os.pardir)
from common.layers import *
from common.gradient import numerical_gradient, numerical_gradient_2d
from common.util import shuffle_dataset, smooth_curve

x = np.array([[-1.0, 0.5, 2.0], [3.0, -0.25, 0.0]])
t = np.array([2, 0])
print("identity", identity_function(x) is x)
print("step", step_function(x).tolist(), step_function(x).dtype)
print("relu", relu(x).tolist())
y = softmax(x)
print("softmax", repr(y.sum()), y.shape)
print("sse", repr(sum_squared_error(y, np.eye(3)[t])))
print("cee", repr(cross_entropy_error(y, t)), repr(cross_entropy_error(y, np.eye(3)[t])))
print("softmax_loss", repr(softmax_loss(x, t)))


def f(row):
    return np.sum(row ** 3) + row[0] * row[-1]


print("grad2d", repr(numerical_gradient_2d(f, x.copy()).round(6).sum()))
print("grad", repr(numerical_gradient(lambda v: np.sum(v ** 2), x.copy()).round(6).sum()))

np.random.seed(1)
xs, ts = shuffle_dataset(np.arange(20.0).reshape(10, 2), np.arange(10))
print("shuffled", ts.tolist(), xs[:, 0].tolist())
curve = np.cos(np.arange(40) / 3.0) + np.arange(40) / 10.0
print("smooth", repr(smooth_curve(curve).sum()), len(smooth_curve(curve)))
