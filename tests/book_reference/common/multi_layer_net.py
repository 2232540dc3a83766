from common.layers import *  # noqa: F401,F403
from common.multi_layer_net_extend import MultiLayerNetExtend


class MultiLayerNet(MultiLayerNetExtend):
    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0):
        super().__init__(input_size, hidden_size_list, output_size, activation,
                         weight_init_std, weight_decay_lambda)
