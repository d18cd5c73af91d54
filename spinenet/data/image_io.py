"""Reads one image file for the conversion tool: check, convert, encode.

Runs in worker processes, so it imports only PIL (no TensorFlow).
"""
import io
from typing import Any, Dict

from PIL import Image

JPEG_QUALITY = 95  # for images that must be re-encoded

# Reasons an image is skipped; keys of the conversion summary.
MISSING = 'missing'
UNREADABLE = 'unreadable'


def read_image(path: str) -> Dict[str, Any]:
  """Reads `path` and returns bytes a tf.Example can hold.

  A 3-channel (RGB) JPEG is passed through byte for byte. Anything else that
  PIL can decode (grayscale, CMYK or RGBA JPEG, PNG, ...) is converted to RGB
  and re-encoded as a JPEG of quality `JPEG_QUALITY`, so every record holds a
  3-channel JPEG (the training input decodes only the crop it needs).

  Args:
    path: image file.

  Returns:
    dict. On success: `encoded` (bytes), `format` (`'jpeg'`), `height`,
    `width` (ints), `converted_from` (`''` when passed through, else e.g.
    `'PNG/RGBA'`). On failure: `error` (`MISSING` or `UNREADABLE`) and
    `detail` (the reason).
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
  except Exception as e:  # pylint: disable=broad-except
    return {'error': UNREADABLE, 'detail': f'{path}: {type(e).__name__}: {e}'}
  width, height = image.size
  if image_format == 'JPEG' and image.mode == 'RGB':
    return {'encoded': data, 'format': 'jpeg', 'height': height,
            'width': width, 'converted_from': ''}
  converted_from = f'{image_format}/{image.mode}'
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
          'width': width, 'converted_from': converted_from}
