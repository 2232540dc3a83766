"""The layer protocol: what a network and an optimizer read from a layer.

A layer with parameters declares them, as class attributes::

    class Affine:
        trainable = (("W", "dW"), ("b", "db"))  # (parameter, its gradient), by attribute
        decayed = ("W",)                        # the parameters weight decay applies to

Its ``forward`` keeps what ``backward`` needs, and ``backward`` sets the gradient
attributes. That is all a network needs to derive ``gradient()``, ``train_step()``,
the backward walk, the weight decay, ``numerical_gradient`` and save/load from its
layer list (``fastbp.networks``); the network's keys (``W1``, ``gamma2``, ...) are found
by identity, since the layers hold the network's ``params`` arrays by reference.

Optional abilities, read from the method signatures (once per class) or from an
attribute:

- ``forward(x, train_flg)``: the layer behaves differently when training (Dropout,
  BatchNormalization); the network passes its mode.
- ``backward(dout, need_dx=False)``: the layer can skip its input gradient, which a
  network's first layer never needs.
- ``backward(dout, <grad>_out=array)`` (``dW_out``, ``db_out``): the layer writes that
  gradient into a given array; ``train_step`` then reuses last step's gradients.
- ``backward_sgd(dout, lr, weight_decay, need_dx)``: the layer can fold an SGD step
  into its backward (``Affine``: into the weight gradient's matrix product);
  ``optimizers.SGD.layer_step`` uses it.
- ``state_arrays()``: arrays that are not trained but saved with the network
  (batch normalization's running statistics), by the layer's own names.
"""
import functools
import inspect

__all__ = ["trainable", "decayed", "takes", "backward"]


def trainable(layer):
    """The ``(parameter, gradient)`` attribute pairs ``layer`` declares (none: ``()``)."""
    return getattr(layer, "trainable", ())


def decayed(layer):
    """The parameters of ``layer`` that weight decay applies to."""
    return getattr(layer, "decayed", ())


@functools.lru_cache(maxsize=256)
def _arguments(fn):
    try:
        return frozenset(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # a builtin without a signature
        return frozenset()


def takes(layer, method, argument):
    """Whether ``layer.<method>`` has a parameter named ``argument`` (read from its
    function once; a method replaced later is read again)."""
    fn = getattr(layer, method, None)
    fn = getattr(fn, "__func__", fn)  # the function, not a bound method holding the layer
    return fn is not None and argument in _arguments(fn)


def backward(layer, dout, need_dx=True):
    """``layer.backward(dout)``, skipping the input gradient (None) when ``need_dx``
    is false and the layer can."""
    if not need_dx and takes(layer, "backward", "need_dx"):
        return layer.backward(dout, need_dx=False)
    return layer.backward(dout)
