import numpy as np

from common.optimizer import *  # noqa: F401,F403
from common.optimizer import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop


class Trainer:
    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20,
                 mini_batch_size=100, optimizer="SGD", optimizer_param={"lr": 0.01},
                 evaluate_sample_num_per_epoch=None, verbose=True):
        self.network, self.verbose = network, verbose
        self.x_train, self.t_train, self.x_test, self.t_test = x_train, t_train, x_test, t_test
        self.batch_size = mini_batch_size
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        classes = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov,
                   "adagrad": AdaGrad, "rmsprop": RMSprop, "adam": Adam}
        self.optimizer = classes[optimizer.lower()](**optimizer_param)
        self.train_size = x_train.shape[0]
        self.iter_per_epoch = max(self.train_size / mini_batch_size, 1)  # a float
        self.max_iter = int(epochs * self.iter_per_epoch)
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list, self.train_acc_list, self.test_acc_list = [], [], []

    def train_step(self):
        idx = np.random.choice(self.train_size, self.batch_size)
        x, t = self.x_train[idx], self.t_train[idx]
        self.optimizer.update(self.network.params, self.network.gradient(x, t))
        loss = self.network.loss(x, t)
        self.train_loss_list.append(loss)
        if self.verbose:
            print("train loss:%s" % loss)
        if self.current_iter % self.iter_per_epoch == 0:  # the first step of an epoch
            self.current_epoch += 1
            k = self.evaluate_sample_num_per_epoch
            xs, ts, xe, te = self.x_train, self.t_train, self.x_test, self.t_test
            if k is not None:
                xs, ts, xe, te = xs[:k], ts[:k], xe[:k], te[:k]
            train_acc, test_acc = self.network.accuracy(xs, ts), self.network.accuracy(xe, te)
            self.train_acc_list.append(train_acc)
            self.test_acc_list.append(test_acc)
            if self.verbose:
                print("=== epoch:%s, train acc:%s, test acc:%s ===" % (self.current_epoch, train_acc, test_acc))
        self.current_iter += 1

    def train(self):
        for _ in range(self.max_iter):
            self.train_step()
        test_acc = self.network.accuracy(self.x_test, self.t_test)
        if self.verbose:
            print("=" * 15 + " Final Test Accuracy " + "=" * 15)
            print("test acc:%s" % test_acc)
