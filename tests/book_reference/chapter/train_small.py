# train_neuralnet in small, through a chapter file next to it; takes an argument.
import os
import sys
sys.path.append(os.pardir)
import numpy as np
from dataset.mnist import load_mnist
from small_net import SmallNet

print("cwd", os.path.basename(os.getcwd()), "args", sys.argv[1:])
np.random.seed(int(sys.argv[1]))
(x_train, t_train), (x_test, t_test) = load_mnist(normalize=True, one_hot_label=True)
network = SmallNet(input_size=784, hidden_size=30, output_size=10)

x_batch, t_batch = x_train[:3], t_train[:3]
grad_numerical = network.numerical_gradient(x_batch, t_batch)
grad_backprop = network.gradient(x_batch, t_batch)
for key in grad_numerical.keys():
    diff = np.average(np.abs(grad_backprop[key] - grad_numerical[key]))
    print(key, "agrees:", bool(diff < 1e-6))

for i in range(300):
    batch_mask = np.random.choice(x_train.shape[0], 100)
    grad = network.gradient(x_train[batch_mask], t_train[batch_mask])
    for key in ("W1", "b1", "W2", "b2"):
        network.params[key] -= 0.1 * grad[key]
    if i % 100 == 0:
        print("loss", network.loss(x_train[batch_mask], t_train[batch_mask]))
        print(network.accuracy(x_train, t_train), network.accuracy(x_test, t_test))
