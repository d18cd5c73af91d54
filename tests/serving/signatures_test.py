"""signatures: the serving contract's names agree with TF Serving and with each other."""
import re

import tensorflow as tf

from spinenet.serving import signatures as sig


class SignaturesTest(tf.test.TestCase):

  def test_names_tf_serving_expects(self):
    self.assertEqual(sig.IMAGE_TENSOR, tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY)
    self.assertEqual(sig.SERVE_TAG, tf.saved_model.SERVING)

  def test_every_signature_has_one_input_whose_spec_carries_its_name(self):
    self.assertLen(set(sig.SIGNATURES), 3)
    self.assertCountEqual(sig.INPUT_KEYS, sig.SIGNATURES)
    self.assertCountEqual(sig.INPUT_SPECS, sig.SIGNATURES)
    for name in sig.SIGNATURES:
      self.assertEqual(sig.INPUT_SPECS[name].name, sig.INPUT_KEYS[name], name)
      self.assertIsNone(sig.INPUT_SPECS[name].shape[0], name)  # any batch size
    self.assertLen(set(sig.INPUT_KEYS.values()), 3)

  def test_input_dtypes_and_shapes(self):
    images = sig.INPUT_SPECS[sig.IMAGE_TENSOR]
    self.assertEqual(images.dtype, tf.uint8)
    self.assertEqual(images.shape.as_list(), [None, None, None, 3])
    for name in (sig.IMAGE_BYTES, sig.TF_EXAMPLE):
      self.assertEqual(sig.INPUT_SPECS[name].dtype, tf.string)
      self.assertEqual(sig.INPUT_SPECS[name].shape.as_list(), [None])

  def test_output_names_are_distinct(self):
    outputs = (sig.DETECTION_OUTPUTS + sig.CLASSIFICATION_OUTPUTS +
               tuple(sig.MASK_OUTPUTS.values()))
    self.assertLen(set(outputs), len(outputs))

  def test_mask_outputs_one_per_format_png_sent_as_b64(self):
    self.assertCountEqual(sig.MASK_OUTPUTS, sig.MASK_FORMATS)
    # TF Serving's REST API base64-encodes string outputs named *_bytes.
    self.assertTrue(sig.MASK_OUTPUTS['png'].endswith('_bytes'))
    self.assertFalse(sig.MASK_OUTPUTS['dense'].endswith('_bytes'))

  def test_the_docstring_table_matches_the_constants(self):
    rows = re.findall(r'^\| `(\w+)` \| `(\w+)` \|', sig.__doc__, re.MULTILINE)
    self.assertEqual(dict(rows), sig.INPUT_KEYS)
    for name in (sig.DETECTION_OUTPUTS + sig.CLASSIFICATION_OUTPUTS +
                 tuple(sig.MASK_OUTPUTS.values())):
      self.assertIn(f'`{name}`', sig.__doc__)


if __name__ == '__main__':
  tf.test.main()
