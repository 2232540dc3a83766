# overfit_dropout in small: the book's Dropout and the Trainer's printed lines.
import os
import sys
sys.path.append(os.pardir)
import numpy as np
from common.layers import Dropout
from common.multi_layer_net_extend import MultiLayerNetExtend
from common.trainer import Trainer
from dataset.mnist import load_mnist

np.random.seed(0)
layer = Dropout(0.3)
x = np.random.randn(4, 6)
out = layer.forward(x)
print("train", repr(out.sum()), int(layer.mask.sum()))
print("test", repr(layer.forward(x, train_flg=False).sum()))
print("backward", repr(layer.backward(np.ones_like(x)).sum()))

(x_train, t_train), (x_test, t_test) = load_mnist(normalize=True)
x_train, t_train = x_train[:300], t_train[:300]
network = MultiLayerNetExtend(input_size=784, hidden_size_list=[50, 50], output_size=10,
                              use_dropout=True, dropout_ration=0.2)
trainer = Trainer(network, x_train, t_train, x_test[:500], t_test[:500], epochs=4,
                  mini_batch_size=100, optimizer="sgd", optimizer_param={"lr": 0.01},
                  verbose=True)
trainer.train()
print(len(trainer.train_acc_list), trainer.train_acc_list[-1], trainer.test_acc_list[-1])
