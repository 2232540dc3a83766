from collections import OrderedDict

import numpy as np

from common.layers import *  # noqa: F401,F403
from common.layers import Affine, BatchNormalization, Dropout, Relu, Sigmoid, SoftmaxWithLoss


class MultiLayerNetExtend:
    """Affine - [BatchNorm] - activation - [Dropout] per hidden layer, then Affine -
    SoftmaxWithLoss."""

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, use_dropout=False,
                 dropout_ration=0.5, use_batchnorm=False):
        self.hidden_layer_num = len(hidden_size_list)
        self.weight_decay_lambda = weight_decay_lambda
        self.params = {}
        sizes = [input_size] + list(hidden_size_list) + [output_size]
        for idx in range(1, len(sizes)):
            if str(weight_init_std).lower() in ("relu", "he"):
                scale = np.sqrt(2.0 / sizes[idx - 1])
            elif str(weight_init_std).lower() in ("sigmoid", "xavier"):
                scale = np.sqrt(1.0 / sizes[idx - 1])
            else:
                scale = weight_init_std
            self.params["W%d" % idx] = scale * np.random.randn(sizes[idx - 1], sizes[idx])
            self.params["b%d" % idx] = np.zeros(sizes[idx])
        self.layers = OrderedDict()
        act = {"relu": Relu, "sigmoid": Sigmoid}[activation]
        for idx in range(1, self.hidden_layer_num + 1):
            self.layers["Affine%d" % idx] = Affine(self.params["W%d" % idx], self.params["b%d" % idx])
            if use_batchnorm:
                self.params["gamma%d" % idx] = np.ones(sizes[idx])
                self.params["beta%d" % idx] = np.zeros(sizes[idx])
                self.layers["BatchNorm%d" % idx] = BatchNormalization(self.params["gamma%d" % idx],
                                                                      self.params["beta%d" % idx])
            self.layers["Activation_function%d" % idx] = act()
            if use_dropout:
                self.layers["Dropout%d" % idx] = Dropout(dropout_ration)
        idx = self.hidden_layer_num + 1
        self.layers["Affine%d" % idx] = Affine(self.params["W%d" % idx], self.params["b%d" % idx])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x, train_flg=False):
        for name, layer in self.layers.items():
            if name.startswith(("Dropout", "BatchNorm")):
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def loss(self, x, t, train_flg=False):
        y = self.predict(x, train_flg)
        decay = 0
        for idx in range(1, self.hidden_layer_num + 2):
            decay += 0.5 * self.weight_decay_lambda * np.sum(self.params["W%d" % idx] ** 2)
        return self.last_layer.forward(y, t) + decay

    def accuracy(self, x, t):
        y = np.argmax(self.predict(x, train_flg=False), axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def gradient(self, x, t):
        self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        grads = {}
        for idx in range(1, self.hidden_layer_num + 2):
            affine = self.layers["Affine%d" % idx]
            grads["W%d" % idx] = affine.dW + self.weight_decay_lambda * affine.W
            grads["b%d" % idx] = affine.db
            if "BatchNorm%d" % idx in self.layers:
                grads["gamma%d" % idx] = self.layers["BatchNorm%d" % idx].dgamma
                grads["beta%d" % idx] = self.layers["BatchNorm%d" % idx].dbeta
        return grads
