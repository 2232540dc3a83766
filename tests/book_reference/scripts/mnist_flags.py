# load_mnist with the book's flags: dtypes, shapes, values.
import os
import sys
sys.path.append(os.pardir)
from dataset.mnist import load_mnist

for normalize in (True, False):
    for flatten in (True, False):
        for one_hot in (False, True):
            (x, t), (x2, t2) = load_mnist(normalize=normalize, flatten=flatten, one_hot_label=one_hot)
            print(normalize, flatten, one_hot, x.dtype, x.shape, t.dtype, t.shape,
                  x2.dtype, x2.shape, t2.dtype, t2.shape)
            print("  ", repr(x[:50].sum()), repr(x2[-7:].sum()), repr(t[:20].sum()), t2[:5].tolist())
