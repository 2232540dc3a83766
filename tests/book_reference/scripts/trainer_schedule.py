# The Trainer's float epoch length (250 / 100 = 2.5), evaluation on a few samples,
# weight decay, one-hot targets and an optimizer by name with float parameters.
import os
import sys
sys.path.append(os.pardir)
import numpy as np
from common.multi_layer_net import MultiLayerNet
from common.trainer import Trainer
from dataset.mnist import load_mnist

np.random.seed(7)
(x_train, t_train), (x_test, t_test) = load_mnist(one_hot_label=True)
network = MultiLayerNet(784, [40, 30], 10, weight_decay_lambda=0.1)
trainer = Trainer(network, x_train[:250], t_train[:250], x_test, t_test, epochs=4,
                  mini_batch_size=100, optimizer="Adam", optimizer_param={"lr": 0.002},
                  evaluate_sample_num_per_epoch=50)
trainer.train()
print("iter_per_epoch", trainer.iter_per_epoch, "max_iter", trainer.max_iter)
print("evaluations", len(trainer.test_acc_list), trainer.test_acc_list)
