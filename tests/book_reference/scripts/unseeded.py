# As most of the book's scripts: no seed of its own. Random initial weights, batches
# drawn with np.random.choice, dropout masks from np.random.rand: all from NumPy's
# global state, which `python -m fastbp.book --seed N` seeds before the script runs.
import os
import sys
sys.path.append(os.pardir)
import numpy as np
from common.multi_layer_net_extend import MultiLayerNetExtend
from dataset.mnist import load_mnist

(x_train, t_train), (x_test, t_test) = load_mnist(normalize=True)
network = MultiLayerNetExtend(784, [30, 20], 10, use_dropout=True, dropout_ration=0.2)
for i in range(60):
    batch_mask = np.random.choice(x_train.shape[0], 50)
    grad = network.gradient(x_train[batch_mask], t_train[batch_mask])
    for key in network.params:
        network.params[key] -= 0.1 * grad[key]
    if i % 20 == 0:
        print("loss", network.loss(x_train[batch_mask], t_train[batch_mask]))
print("W1[0, :3]", network.params["W1"][0, :3])
print("accuracy", network.accuracy(x_test, t_test))
