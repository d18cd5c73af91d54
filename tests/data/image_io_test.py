"""image_io.read_image: pass-through, conversion to RGB JPEG, and skip reasons."""
import io
import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image

from spinenet.data import image_io


def _gradient(h=24, w=32):
  rgb = np.zeros((h, w, 3), np.uint8)
  rgb[..., 0] = np.linspace(0, 255, w)[None].astype(np.uint8)
  rgb[..., 1] = np.linspace(0, 255, h)[:, None].astype(np.uint8)
  rgb[..., 2] = 60
  return rgb


def _decode(data):
  image = Image.open(io.BytesIO(data))
  return image.format, image.mode, np.asarray(image).astype(int)


class ReadImageTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.dir)

  def _save(self, name, image, **kwargs):
    path = os.path.join(self.dir, name)
    image.save(path, **kwargs)
    return path

  def test_rgb_jpeg_is_passed_through_byte_for_byte(self):
    path = self._save('a.jpg', Image.fromarray(_gradient()), format='JPEG')
    with open(path, 'rb') as f:
      original = f.read()
    out = image_io.read_image(path)
    self.assertEqual(out['encoded'], original)
    self.assertEqual((out['format'], out['height'], out['width']), ('jpeg', 24, 32))
    self.assertEqual(out['converted_from'], '')

  def test_grayscale_png_becomes_an_rgb_jpeg_with_the_same_pixels(self):
    gray = _gradient()[..., 0]
    path = self._save('g.png', Image.fromarray(gray, 'L'), format='PNG')
    out = image_io.read_image(path)
    self.assertEqual(out['converted_from'], 'PNG/L')
    self.assertEqual((out['height'], out['width']), gray.shape)
    fmt, mode, pixels = _decode(out['encoded'])
    self.assertEqual((fmt, mode), ('JPEG', 'RGB'))
    for channel in range(3):  # up to JPEG loss
      self.assertLess(np.abs(pixels[..., channel] - gray.astype(int)).mean(), 3)

  def test_cmyk_jpeg_is_converted(self):
    path = self._save('c.jpg', Image.fromarray(_gradient()).convert('CMYK'),
                      format='JPEG')
    out = image_io.read_image(path)
    self.assertEqual(out['converted_from'], 'JPEG/CMYK')
    self.assertEqual(_decode(out['encoded'])[:2], ('JPEG', 'RGB'))

  def test_transparent_pixels_become_white_not_their_hidden_colour(self):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255      # red everywhere ...
    rgba[:, :8, 3] = 0      # ... fully transparent on the left half
    rgba[:, 8:, 3] = 255    # opaque on the right half
    path = self._save('t.png', Image.fromarray(rgba, 'RGBA'), format='PNG')
    out = image_io.read_image(path)
    self.assertEqual(out['converted_from'], 'PNG/RGBA')
    _, _, pixels = _decode(out['encoded'])
    np.testing.assert_allclose(pixels[2:-2, 1:5].mean((0, 1)), [255, 255, 255], atol=6)
    np.testing.assert_allclose(pixels[2:-2, 11:15].mean((0, 1)), [255, 0, 0], atol=6)

  def test_palette_with_transparency_is_composited(self):
    palette = Image.new('P', (8, 8), 1)
    palette.putpalette([0, 0, 255] + [0, 255, 0] + [0, 0, 0] * 254)
    palette.info['transparency'] = 1  # index 1 (green) is transparent
    path = self._save('p.png', palette, format='PNG', transparency=1)
    out = image_io.read_image(path)
    self.assertEqual(out['converted_from'], 'PNG/P')
    _, _, pixels = _decode(out['encoded'])
    np.testing.assert_allclose(pixels.mean((0, 1)), [255, 255, 255], atol=6)

  def test_missing_file(self):
    path = os.path.join(self.dir, 'nope.jpg')
    out = image_io.read_image(path)
    self.assertEqual(out['error'], image_io.MISSING)
    self.assertIn(path, out['detail'])
    self.assertNotIn('encoded', out)

  def test_truncated_and_non_image_files_are_unreadable(self):
    path = self._save('full.jpg', Image.fromarray(_gradient(64, 64)), format='JPEG')
    with open(path, 'rb') as f:
      data = f.read()
    for name, content in (('cut.jpg', data[:len(data) // 2]),
                          ('text.png', b'not an image at all')):
      bad = os.path.join(self.dir, name)
      with open(bad, 'wb') as f:
        f.write(content)
      out = image_io.read_image(bad)
      self.assertEqual(out['error'], image_io.UNREADABLE, name)
      self.assertIn(bad, out['detail'])

  def test_a_directory_is_unreadable(self):
    out = image_io.read_image(self.dir)
    self.assertEqual(out['error'], image_io.UNREADABLE)
    self.assertIn(self.dir, out['detail'])


if __name__ == '__main__':
  absltest.main()
