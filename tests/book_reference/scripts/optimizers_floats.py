# The book's optimizers on plain floats and on arrays, with the np of the star import.
import os
import sys
sys.path.append(os.pardir)
from collections import OrderedDict
from common.optimizer import *


def df(x, y):
    return x / 10.0, 2.0 * y


optimizers = OrderedDict()
optimizers["SGD"] = SGD(lr=0.95)
optimizers["Momentum"] = Momentum(lr=0.1)
optimizers["AdaGrad"] = AdaGrad(lr=1.5)
optimizers["RMSprop"] = RMSprop(lr=0.1, decay_rate=0.9)
optimizers["Adam"] = Adam(lr=0.3)

for key, optimizer in optimizers.items():
    params = {"x": -7.0, "y": 2.0}
    grads = {}
    for i in range(30):
        grads["x"], grads["y"] = df(params["x"], params["y"])
        optimizer.update(params, grads)
        if i % 10 == 9:
            print(key, i, str(params["x"]), str(params["y"]))

np.random.seed(3)
W = np.random.randn(3, 4)
params = {"W": W, "b": np.zeros(4), "s": 0.5}
opt = Adam(lr=0.01)
for i in range(5):
    grads = {"W": np.random.randn(3, 4), "b": np.random.randn(4), "s": float(i) - 2.0}
    opt.update(params, grads)
print("in place:", params["W"] is W, repr(W.sum()), repr(params["b"].sum()), str(params["s"]))
