"""RandAugment ops: PIL's definitions, geometry, magnitude 0, static shapes."""
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
import pytest
import tensorflow as tf

from spinenet.data import randaugment as ra


def _image(seed=0, size=(24, 32)):
  """A random image with smooth structure (so histograms are not flat)."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(30, 220, (size[0] // 4, size[1] // 4, 3), np.uint8)
  image = np.repeat(np.repeat(coarse, 4, 0), 4, 1)
  noise = rng.integers(-20, 21, image.shape)
  return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


def _max_diff(a, b):
  return int(np.max(np.abs(np.asarray(a, int) - np.asarray(b, int))))


@pytest.mark.parametrize('name, ours, theirs, tolerance', [
    ('solarize', lambda x: ra.solarize(x, 100),
     lambda im: ImageOps.solarize(im, 100), 0),
    ('posterize', lambda x: ra.posterize(x, 3),
     lambda im: ImageOps.posterize(im, 3), 0),
    ('equalize', ra.equalize, ImageOps.equalize, 0),
    ('auto_contrast', ra.auto_contrast, ImageOps.autocontrast, 1),
    ('brightness', lambda x: ra.brightness(x, 1.6),
     lambda im: ImageEnhance.Brightness(im).enhance(1.6), 1),
    ('color', lambda x: ra.color(x, 0.3),
     lambda im: ImageEnhance.Color(im).enhance(0.3), 2),
    ('contrast', lambda x: ra.contrast(x, 1.7),
     lambda im: ImageEnhance.Contrast(im).enhance(1.7), 2),
    ('sharpness', lambda x: ra.sharpness(x, 0.2),
     lambda im: ImageEnhance.Sharpness(im).enhance(0.2), 1),
])
def test_colour_ops_match_pil(name, ours, theirs, tolerance):
  del name
  image = _image(1)
  expected = np.asarray(theirs(Image.fromarray(image)))
  got = ours(tf.constant(image)).numpy()
  assert got.dtype == np.uint8
  assert _max_diff(got, expected) <= tolerance


def test_sharpness_degenerate_is_pil_smooth():
  image = _image(2)
  smooth = np.asarray(Image.fromarray(image).filter(ImageFilter.SMOOTH))
  assert _max_diff(ra.sharpness(tf.constant(image), 0.0), smooth) <= 1


def test_rotate_by_90_degrees_turns_a_square_image_counterclockwise():
  image = _image(3, (16, 16))
  got = ra.rotate(tf.constant(image), 90.0).numpy()
  np.testing.assert_array_equal(got, np.rot90(image, 1))


def test_translate_moves_content_and_fills_gray():
  image = _image(4)
  right = ra.translate_x(tf.constant(image), 5.0).numpy()
  np.testing.assert_array_equal(right[:, 5:], image[:, :-5])
  assert np.all(right[:, :5] == ra.FILL_VALUE)
  up = ra.translate_y(tf.constant(image), -3.0).numpy()
  np.testing.assert_array_equal(up[:-3], image[3:])
  assert np.all(up[-3:] == ra.FILL_VALUE)


def test_shear_x_shifts_each_row_by_factor_times_its_index():
  image = _image(5)
  got = ra.shear_x(tf.constant(image), 0.25).numpy()
  # Row 8 reads input columns x + 2.
  np.testing.assert_array_equal(got[8, :-2], image[8, 2:])
  got = ra.shear_y(tf.constant(image), 0.25).numpy()
  np.testing.assert_array_equal(got[:-2, 8], image[2:, 8])


@pytest.mark.parametrize('op', [op for op in ra.OPS
                                if op not in ('auto_contrast', 'equalize')])
def test_magnitude_zero_is_the_identity(op):
  image = _image(6)
  got = ra.apply_op(tf.constant(image), op, 0.0, sign=-1.0).numpy()
  np.testing.assert_array_equal(got, image)


def test_randaugment_keeps_static_shape_and_is_a_function_of_the_seed():
  image = tf.constant(_image(7))
  fn = tf.function(lambda x, s: ra.randaugment(x, s, num_layers=2, magnitude=9))
  a = fn(image, tf.constant([1, 2]))
  assert a.shape == image.shape and a.dtype == tf.uint8
  np.testing.assert_array_equal(a, fn(image, tf.constant([1, 2])))
  outputs = {fn(image, tf.constant([i, 0])).numpy().tobytes() for i in range(12)}
  assert len(outputs) > 6  # different seeds pick different ops and signs


def test_bad_arguments_are_rejected_with_the_value():
  image = tf.constant(_image(8))
  with pytest.raises(ValueError, match='magnitude=11'):
    ra.randaugment(image, [0, 0], magnitude=11)
  with pytest.raises(ValueError, match='blur'):
    ra.randaugment(image, [0, 0], ops=('rotate', 'blur'))
  with pytest.raises(TypeError, match='float32'):
    ra.randaugment(tf.cast(image, tf.float32), [0, 0])
