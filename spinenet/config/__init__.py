"""The config edge: gin registrations, parsing and the `*_from_config` entry points.

The only package that imports gin. `registrations` names what gin files can
bind, `parsing` reads files and bindings with located errors, and
`entry_points` runs training, export and search from them:

  from spinenet import config
  config.train_from_config(['experiments/demo_cpu.gin'], params,
                           mode='train_and_eval', model_dir='/tmp/run')
"""
from spinenet.config.entry_points import export_from_config
from spinenet.config.entry_points import export_tflite_from_config
from spinenet.config.entry_points import load_experiment
from spinenet.config.entry_points import search_from_config
from spinenet.config.entry_points import train_from_config
from spinenet.config.parsing import ConfigError
from spinenet.config.parsing import parse_config
from spinenet.config.parsing import REPO_ROOT
from spinenet.config.parsing import write_config
