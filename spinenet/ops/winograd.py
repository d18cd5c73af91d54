"""3x3 convolution by Winograd's minimal filtering, F(4x4, 3x3).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016).
The output is cut into 4x4 tiles; each tile is computed from the 6x6 input
tile under it as

  Y = A^T [ (G g G^T) * (B^T d B) ] A

where `*` is elementwise over the 36 tile positions and, summed over input
channels, becomes 36 independent matmuls `[tiles, C] x [C, K]`. That is 36
multiplies per 16 outputs per channel pair instead of 144: 4x fewer than a
direct convolution, paid for with the (cheap, memory-bound) tile transforms.

Why it is here: on a CPU without fast convolution kernels the RetinaNet head's
3x3, 256-channel convolutions dominate training. This module expresses the
algorithm in plain TensorFlow ops (slices, small constant matmuls, one batched
matmul), so autodiff gives the gradients (except the input transform's, which
is written out as an overlap-add: `transform_input`) and
`tf.function(jit_compile=True)` fuses the transforms; see
`winograd_conv.WinogradConv2D`. TPUs and GPUs have native convolutions and do
not need it.

Numerics: in float32 the result matches `tf.nn.conv2d` to ~1e-5 relative (the
transforms scale values by up to ~10), so use it in float32 only.
"""
import numpy as np
import tensorflow as tf

TILE = 4     # output tile side (m)
_WINDOW = 6  # input tile side (m + r - 1)

# Interpolation points 0, 1, -1, 2, -2 and infinity (Lavin & Gray, 2016).
_B_T = np.array([[4, 0, -5, 0, 1, 0],
                 [0, -4, -4, 1, 1, 0],
                 [0, 4, -4, -1, 1, 0],
                 [0, -2, -1, 2, 1, 0],
                 [0, 2, -1, -2, 1, 0],
                 [0, 4, 0, -5, 0, 1]], np.float64)
_G = np.array([[1 / 4, 0, 0],
               [-1 / 6, -1 / 6, -1 / 6],
               [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6],
               [0, 0, 1]], np.float64)
_A_T = np.array([[1, 1, 1, 1, 1, 0],
                 [0, 1, -1, 2, -2, 0],
                 [0, 1, 1, 4, 4, 0],
                 [0, 1, -1, 8, -8, 1]], np.float64)


def transform_kernel(kernel):
  """Winograd-domain filters `G g G^T` of a 3x3 kernel.

  Args:
    kernel: float `[3, 3, C, K]` (HWIO, as `tf.nn.conv2d` takes it).

  Returns:
    `[36, C, K]`: for tile position `6 * i + j`, the `[C, K]` matrix that
    multiplies the transformed input at that position.
  """
  if kernel.shape[:2] != (3, 3):
    raise ValueError(f'Winograd F(4x4, 3x3) needs a 3x3 kernel, got {kernel.shape}.')
  channels, filters = kernel.shape[2], kernel.shape[3]
  g = tf.constant(np.kron(_G, _G), kernel.dtype)  # [36, 9]
  return tf.reshape(tf.matmul(g, tf.reshape(kernel, [9, -1])),
                    [_WINDOW * _WINDOW, channels, filters])


def _overlap_add(parts, axis):
  """Adjoint of cutting 6-wide windows at stride 4 along the tile `axis`.

  Args:
    parts: 6 tensors of one shape; `parts[l]` holds, for every tile `t` along
      `axis`, the gradient that reached window position `l`, i.e. strip
      position `4 t + l`.
    axis: the tile axis (static length `T`).

  Returns:
    The strip's gradient: the same shape with `4 T + 2` along `axis`, where
    positions shared by two windows (`4 t + 4`, `4 t + 5`) add both parts.
  """
  tiles, rank = parts[0].shape[axis], parts[0].shape.rank

  def pad(x, before, after):
    paddings = [[0, 0]] * rank
    paddings[axis] = [before, after]
    return tf.pad(x, paddings)

  # Position l of tile t (l < 4), plus position l + 4 of tile t - 1.
  phases = [pad(parts[l], 0, 1) + pad(parts[l + 4], 1, 0) if l < 2
            else pad(parts[l], 0, 1) for l in range(TILE)]
  strip = tf.stack(phases, axis=axis + 1)  # [..., T + 1, 4, ...]
  shape = [-1 if d is None else d for d in strip.shape.as_list()]
  shape[axis:axis + 2] = [TILE * (tiles + 1)]
  index = [slice(None)] * rank
  index[axis] = slice(0, TILE * tiles + 2)
  return tf.reshape(strip, shape)[tuple(index)]


@tf.custom_gradient
def transform_input(padded):
  """Winograd-domain input tiles `B^T d B` of every 6x6 window.

  Args:
    padded: float `[B, 4 T_h + 2, 4 T_w + 2, C]`, the input already padded
      for 'SAME' and to whole tiles (H, W, C static).

  Returns:
    `[36, B * T_h * T_w, C]`: for window position `6 * i + j`, every tile's
    transformed value (tiles in `[B, T_h, T_w]` order).

  The gradient is written out rather than left to autodiff: the adjoint of
  the 36 overlapping window slices is an overlap-add of 6 + 6 shifted strips
  instead of 36 padded copies summed. Whole conv forward + backward, batch 2,
  256 -> 256 channels, in XLA: 70 -> 63 ms at 48x48, 26 -> 22 ms at 24x24.
  """
  _, padded_h, padded_w, channels = padded.shape
  tiles_h, tiles_w = (padded_h - 2) // TILE, (padded_w - 2) // TILE
  batch = tf.shape(padded)[0]
  # Position (i, j) of every window: [36, B, T_h, T_w, C].
  windows = tf.stack([
      padded[:, i:i + tiles_h * TILE:TILE, j:j + tiles_w * TILE:TILE]
      for i in range(_WINDOW) for j in range(_WINDOW)])
  # B^T d B for all windows at once: (B^T kron B^T) on the flattened window.
  b = tf.constant(np.kron(_B_T, _B_T), padded.dtype)  # [36, 36]
  v = tf.matmul(b, tf.reshape(windows, [_WINDOW * _WINDOW, -1]))

  def grad(dv):
    dwindows = tf.matmul(b, tf.reshape(dv, [_WINDOW * _WINDOW, -1]), transpose_a=True)
    dwindows = tf.reshape(dwindows, [_WINDOW * _WINDOW, batch, tiles_h, tiles_w, channels])
    rows = [_overlap_add([dwindows[_WINDOW * i + j] for j in range(_WINDOW)], axis=2)
            for i in range(_WINDOW)]
    return _overlap_add(rows, axis=1)

  return tf.reshape(v, [_WINDOW * _WINDOW, -1, channels]), grad


def conv2d_3x3(inputs, kernel):
  """`tf.nn.conv2d(inputs, kernel, strides=1, padding='SAME')` by Winograd.

  Args:
    inputs: float `[B, H, W, C]` (NHWC); H, W and C must be static, B may be
      dynamic. Any H, W >= 1 (borders are zero-padded as in 'SAME').
    kernel: float `[3, 3, C, K]` of the same dtype.

  Returns:
    `[B, H, W, K]`, equal to the direct convolution up to float rounding.
  """
  _, height, width, channels = inputs.shape
  if height is None or width is None or channels is None:
    raise ValueError('conv2d_3x3 needs static height, width and channels; got '
                     f'{inputs.shape}.')
  if kernel.shape[2] != channels:
    raise ValueError(f'kernel {kernel.shape} does not match {channels} input channels.')
  filters = kernel.shape[3]
  batch = tf.shape(inputs)[0]
  tiles_h, tiles_w = -(-height // TILE), -(-width // TILE)
  # 'SAME' pads one row/column of zeros each side; pad the far side further so
  # the 6x6 windows (stride 4) cover whole tiles.
  padded = tf.pad(inputs, [[0, 0], [1, tiles_h * TILE + 1 - height],
                           [1, tiles_w * TILE + 1 - width], [0, 0]])
  v = transform_input(padded)                           # [36, tiles, C]
  m = tf.matmul(v, transform_kernel(kernel))            # [36, tiles, K]
  a = tf.constant(np.kron(_A_T, _A_T), inputs.dtype)   # [16, 36]
  y = tf.matmul(a, tf.reshape(m, [_WINDOW * _WINDOW, -1]))
  # [row in tile, col in tile, B, tile row, tile col, K] -> NHWC.
  y = tf.reshape(y, [TILE, TILE, batch, tiles_h, tiles_w, filters])
  y = tf.transpose(y, [2, 3, 0, 4, 1, 5])
  y = tf.reshape(y, [batch, tiles_h * TILE, tiles_w * TILE, filters])
  return y[:, :height, :width]


def conv_stack_3x3(inputs, kernels, scales, offsets, activation):
  """Consecutive `activation(conv2d_3x3(x, kernel) * scale + offset)` layers.

  The inference form of a stack of 3x3 conv + batch norm + activation layers
  (conv bias and batch norm folded into `scale` and `offset`). Compiled as
  one XLA cluster (`conv_stack_3x3_xla`), each layer's output transform,
  affine map, activation and the next layer's input transform fuse into one
  pass over memory instead of being separate ops.

  Args:
    inputs: float `[B, H, W, C]` (H, W, C static).
    kernels: list of `[3, 3, C_i, K_i]`, `C_0 = C`, `C_{i+1} = K_i`.
    scales, offsets: lists of `[K_i]`, one per kernel.
    activation: a function of a tensor, applied after every layer.

  Returns:
    `[B, H, W, K_last]`.
  """
  if not len(kernels) == len(scales) == len(offsets):
    raise ValueError(f'{len(kernels)} kernels, {len(scales)} scales and '
                     f'{len(offsets)} offsets: need one of each per layer.')
  x = inputs
  for kernel, scale, offset in zip(kernels, scales, offsets):
    x = activation(conv2d_3x3(x, kernel) * scale + offset)
  return x


# The transforms are slices and small matmuls: XLA fuses them into a few
# passes, which is what makes the algorithm pay off on a CPU.
conv2d_3x3_xla = tf.function(conv2d_3x3, jit_compile=True, autograph=False)
conv_stack_3x3_xla = tf.function(conv_stack_3x3, jit_compile=True, autograph=False)
