"""Test-wide setup: Keras 2 and quiet TensorFlow, before anything imports TF."""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
