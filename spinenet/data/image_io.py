"""Reads one image file for the conversion tool: check, convert, encode.

Runs in worker processes, so it imports only PIL (no TensorFlow).
"""
import io
from typing import Any, Dict

import numpy as np
from PIL import Image

JPEG_QUALITY = 95  # for images that must be re-encoded

# Reasons an image is skipped; keys of the conversion summary.
MISSING = 'missing'
UNREADABLE = 'unreadable'
UNSUPPORTED = 'unsupported_pixels'  # high-bit-depth values of unknown scale

_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N')


class _Unsupported(ValueError):
  """Pixel values that cannot be scaled to 8 bits without guessing."""


def _to_8_bit(image: Image.Image) -> Image.Image:
  """Rescales a high-bit-depth single-channel image to mode `L`.

  PIL's own `convert` clips these to 0..255, so a 16-bit image comes out
  almost white and a float one in [0, 1] black. Here:

  * 16-bit (`I;16*`) and 32-bit integer (`I`) images are read as full-range
    16-bit: `round(x / 257)`, which maps 0..65535 onto 0..255 exactly (65535
    -> 255, 257 -> 1). The scale is the bit depth's, not the range used, so
    a dark photo stays dark. `I` values outside 0..65535 are refused.
  * float (`F`) images must hold finite values in [0, 1] (the usual
    normalized float image): `round(x * 255)`. Anything else is refused, as
    its scale cannot be known.

  Args:
    image: a PIL image of mode `I;16*`, `I` or `F`.

  Returns:
    mode `L` image of the same size.

  Raises:
    _Unsupported: naming the mode and the value range found.
  """
  pixels = np.asarray(image)
  if image.mode == 'F':
    if not np.isfinite(pixels).all():
      raise _Unsupported('float (mode F) image with NaN or infinite values')
    lo, hi = float(pixels.min()), float(pixels.max())
    if lo < 0.0 or hi > 1.0:
      raise _Unsupported(
          f'float (mode F) image with values in [{lo:g}, {hi:g}]; only [0, 1] '
          'has a known scale to 8 bits. Convert it to 8 bits first')
    scaled = np.round(pixels.astype(np.float64) * 255.0)
  else:
    pixels = pixels.astype(np.int64)
    lo, hi = int(pixels.min()), int(pixels.max())
    if lo < 0 or hi > 65535:
      raise _Unsupported(
          f'integer (mode {image.mode}) image with values in [{lo}, {hi}], '
          'outside 16 bits. Convert it to 8 bits first')
    scaled = np.round(pixels / 257.0)
  return Image.fromarray(scaled.astype(np.uint8), 'L')


def _exif_orientation(image: Image.Image) -> int:
  try:
    return int(image.getexif().get(_EXIF_ORIENTATION, 1))
  except Exception:  # pylint: disable=broad-except
    return 1


def read_image(path: str) -> Dict[str, Any]:
  """Reads `path` and returns bytes a tf.Example can hold.

  A 3-channel (RGB) JPEG is passed through byte for byte. Anything else that
  PIL can decode (grayscale, CMYK or RGBA JPEG, PNG, ...) is converted to RGB
  and re-encoded as a JPEG of quality `JPEG_QUALITY`, so every record holds a
  3-channel JPEG (the training input decodes only the crop it needs).
  High-bit-depth grayscale (16-bit, 32-bit integer, float) is rescaled to 8
  bits (`_to_8_bit`: 16-bit as `x / 257`, float in [0, 1] as `x * 255`) or
  refused (`UNSUPPORTED`), never clipped; 16-bit RGB PNGs PIL reads as 8-bit
  itself.

  EXIF orientation is not applied: pixels stay in their stored order, the
  frame COCO's annotations (and its `width`/`height`) use, and the frame
  `tf.io.decode_jpeg` reads. `exif_orientation` reports the tag (1: none).

  Args:
    path: image file.

  Returns:
    dict. On success: `encoded` (bytes), `format` (`'jpeg'`), `height`,
    `width` (ints), `converted_from` (`''` when passed through, else e.g.
    `'PNG/RGBA'`), `exif_orientation` (int, 1 when absent). On failure:
    `error` (`MISSING`, `UNREADABLE` or `UNSUPPORTED`) and `detail` (the
    reason, naming `path`).
  """
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except FileNotFoundError:
    return {'error': MISSING, 'detail': f'no such file: {path}'}
  except OSError as e:
    return {'error': UNREADABLE, 'detail': f'{path}: {e}'}
  try:
    image = Image.open(io.BytesIO(data))
    image_format = image.format
    image.load()  # decodes everything: catches truncated and corrupt files
  except Image.UnidentifiedImageError:
    return {'error': UNREADABLE,
            'detail': f'{path}: not an image format PIL can read ({len(data)} '
                      f'bytes starting {data[:8]!r})'}
  except Exception as e:  # pylint: disable=broad-except
    return {'error': UNREADABLE, 'detail': f'{path}: {type(e).__name__}: {e}'}
  width, height = image.size
  orientation = _exif_orientation(image)
  if image_format == 'JPEG' and image.mode == 'RGB':
    return {'encoded': data, 'format': 'jpeg', 'height': height,
            'width': width, 'converted_from': '',
            'exif_orientation': orientation}
  converted_from = f'{image_format}/{image.mode}'
  if image.mode in _SIXTEEN_BIT_MODES + ('I', 'F'):
    try:
      image = _to_8_bit(image)
    except _Unsupported as e:
      return {'error': UNSUPPORTED, 'detail': f'{path}: {e}'}
  try:
    if image.mode in ('RGBA', 'LA', 'PA') or (
        image.mode == 'P' and 'transparency' in image.info):
      # Composite onto white rather than dropping alpha (which keeps the
      # arbitrary colours stored under fully transparent pixels).
      rgba = image.convert('RGBA')
      rgb = Image.new('RGB', rgba.size, (255, 255, 255))
      rgb.paste(rgba, mask=rgba.getchannel('A'))
    else:
      rgb = image.convert('RGB')
    out = io.BytesIO()
    rgb.save(out, format='JPEG', quality=JPEG_QUALITY)
  except Exception as e:  # pylint: disable=broad-except
    return {'error': UNREADABLE,
            'detail': f'{path}: cannot convert {converted_from} to RGB: {e}'}
  return {'encoded': out.getvalue(), 'format': 'jpeg', 'height': height,
          'width': width, 'converted_from': converted_from,
          'exif_orientation': orientation}
