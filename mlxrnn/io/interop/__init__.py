"""Load and save recurrent weights in the layouts of PyTorch, Keras and ``mlx.nn``.

Everything here is NumPy: a PyTorch state dict is a mapping of names to arrays (CPU tensors
are accepted too, converted with ``.detach().cpu().numpy()``), a Keras layer's weights are the
list ``layer.get_weights()`` returns, an ``mlx.nn`` layer's parameters are a (flat or nested)
dict such as ``dict(tree_flatten(module.parameters()))``. Neither torch, TensorFlow nor MLX is
imported by this package. ``from_*`` returns an mlxrnn layer on any backend; ``to_*`` returns
NumPy arrays in the layer's dtype.

How the layouts map onto ours (row vectors: W_x (D, G·H), W_h (H, G·H), b (G·H,); gate blocks
GRU [u, r, c], LSTM [u, f, c̃, o]):

================  ==========================  =================================  ============
                  PyTorch nn.RNN/GRU/LSTM     Keras SimpleRNN/GRU/LSTM           mlx.nn
================  ==========================  =================================  ============
matrices          (G·H, D), (G·H, H): W.T     kernel (D, G·H), recurrent (H,G·H)  as PyTorch
GRU gate order    r, z, n                     z, r, h                            r, z, n
LSTM gate order   i, f, g, o                  i, f, c, o                         i, f, g, o
biases            b_ih + b_hh (two)           one; GRU reset_after: (2, 3H)      one (+ bhn)
================  ==========================  =================================  ============

* GRU: all three frameworks write h = z ∗ h_prev + (1 − z) ∗ ñ, so their z is our 1 − Γ_u and
  σ(−a) = 1 − σ(a): the z block's weights and bias are negated. PyTorch, mlx.nn and Keras
  ``reset_after=True`` are our ``variant="reset_after"`` (the recurrent candidate bias is our
  ``b_hn``); Keras ``reset_after=False`` is our ``variant="full"``.
* Two biases (PyTorch; Keras GRU ``reset_after=True``): b = b_ih + b_hh on every block except
  the GRU candidate, where b_c = b_ih_n and b_hn = b_hh_n. The split cannot be recovered, so
  saving puts the whole bias on the input side and zeros on the recurrent side (except b_hn).
  The round trip source → mlxrnn → source therefore gives identical outputs always, and
  bit-identical weights when the source's recurrent bias was zero (outside the GRU candidate
  block); mlxrnn → source → mlxrnn is bit-identical always. Keras single-bias layouts and
  mlx.nn round-trip bit-identically.
* Not representable, refused with a one-line error: PyTorch ``proj_size`` (``weight_hr_l*``),
  activations other than tanh/ReLU (RNN) or tanh/sigmoid (GRU, LSTM), our peephole LSTM,
  ``simple`` GRU, minGRU and minLSTM (no framework has them), our ``full`` GRU in PyTorch/mlx.nn, Keras
  Bidirectional ``merge_mode`` other than concat/sum, multi-layer or bidirectional mlx.nn.
* ``bias=False`` sources load with zero biases (which training may change); saving with
  ``bias=False`` omits the biases and refuses when any of them is non-zero.
* Our layers are batch-first, output zeros at padded steps, and take states as (L·D, B, H) —
  exactly what PyTorch returns; Keras returns one state per direction.
"""

# the gate tables were module constants of the single-file interop; still importable from here
from mlxrnn.io.interop.common import KERAS_GATES as KERAS_GATES
from mlxrnn.io.interop.common import NEGATED as NEGATED
from mlxrnn.io.interop.common import OUR_GATES as OUR_GATES
from mlxrnn.io.interop.common import TORCH_GATES as TORCH_GATES
from mlxrnn.io.interop.keras import from_keras, to_keras
from mlxrnn.io.interop.mlx_nn import from_mlx_nn, to_mlx_nn
from mlxrnn.io.interop.pytorch import from_torch, to_torch

__all__ = ["from_torch", "to_torch", "from_keras", "to_keras", "from_mlx_nn", "to_mlx_nn"]
