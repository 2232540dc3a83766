"""The book's training loop (chapter 5.7.4) with fastbp's TwoLayerNet on the full MNIST."""
import time

import numpy as np

from fastbp import TwoLayerNet

from _mnist import load


def test_book_training_loop_reaches_the_book_accuracy(backend, mnist_dir):
    x_train, t_train = load(mnist_dir, "train")
    x_test, t_test = load(mnist_dir, "test")
    t_train = np.eye(10)[t_train]  # one-hot, as the book loads it
    np.random.seed(0)
    network = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)

    iters_num, batch_size, learning_rate = 10000, 100, 0.1
    train_size = x_train.shape[0]
    iter_per_epoch = max(train_size / batch_size, 1)  # the book's intent (the seed slipped)
    test_acc_list = []
    start = time.perf_counter()
    for i in range(iters_num):
        batch_mask = np.random.choice(train_size, batch_size)
        x_batch, t_batch = x_train[batch_mask], t_train[batch_mask]
        grad = network.gradient(x_batch, t_batch)
        for key in ("W1", "b1", "W2", "b2"):
            network.params[key] -= learning_rate * grad[key]
        if i % iter_per_epoch == 0:
            test_acc_list.append(network.accuracy(x_test, t_test))
    elapsed = time.perf_counter() - start
    final = network.accuracy(x_test, t_test)
    print(f"{backend.__name__}: test accuracy {final:.4f} in {elapsed:.1f} s")
    assert len(test_acc_list) == 17  # one per epoch of 600 iterations
    assert final >= 0.965
    assert network.accuracy(x_train, np.argmax(t_train, axis=1)) >= 0.965
