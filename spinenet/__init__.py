"""spinenet: SpineNet (Du et al., CVPR 2020) in TensorFlow 2 with Keras 2 (tf-keras).

The project uses Keras 2 through `tf_keras`; `TF_USE_LEGACY_KERAS=1` makes
`tf.keras` resolve to it as well, so it is set before TensorFlow is imported.
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

__version__ = '0.1.0'
