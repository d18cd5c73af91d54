"""Every gin name resolves under its short name and as `spinenet.<name>`."""
import inspect

import gin
import pytest

from spinenet.config import parsing
from spinenet.config import registrations
from spinenet.modeling import registry
from spinenet.modeling import retinanet
from spinenet.search import driver
from spinenet.search import proxy
from spinenet.training import classification_task
from spinenet.training import losses
from spinenet.training import optimization
from spinenet.training import retinanet_task
from spinenet.training import train_lib

# gin name -> what it configures.
REGISTERED = {
    'build_retinanet': registry.build_retinanet,
    'RetinaNetTask': retinanet_task.RetinaNetTask,
    'DataOptions': retinanet_task.DataOptions,
    'LossOptions': losses.LossOptions,
    'OptimizerOptions': optimization.OptimizerOptions,
    'TrainerOptions': train_lib.TrainerOptions,
    'DetectionConfig': retinanet.DetectionConfig,
    'experiment': registrations.experiment,
    'build_classifier': registry.build_classifier,
    'ClassificationTask': classification_task.ClassificationTask,
    'ClassificationDataOptions': classification_task.ClassificationDataOptions,
    'SearchOptions': driver.SearchOptions,
    'BuiltinDataset': proxy.BuiltinDataset,
    'search': registrations.search_settings,
}


@pytest.mark.parametrize('name', sorted(REGISTERED))
def test_registered_under_both_names(name):
  target = inspect.unwrap(REGISTERED[name])
  parameter = next(iter(inspect.signature(target).parameters))
  gin.clear_config()
  gin.bind_parameter(f'spinenet.{name}.{parameter}', 'by the long name')
  assert gin.query_parameter(f'{name}.{parameter}') == 'by the long name'
  gin.bind_parameter(f'{name}.{parameter}', 'by the short name')
  assert gin.query_parameter(f'spinenet.{name}.{parameter}') == 'by the short name'
  gin.clear_config()


def test_bindings_by_either_name_configure_the_same_object():
  parsing.parse_config([], ['spinenet.TrainerOptions.train_steps = 11',
                            'TrainerOptions.steps_per_loop = 3',
                            "spinenet.SearchOptions.algorithm = 'random'"])
  options = registrations.TrainerOptions()
  assert isinstance(options, train_lib.TrainerOptions)
  assert (options.train_steps, options.steps_per_loop) == (11, 3)
  settings = registrations.search_settings()
  assert isinstance(settings['options'], driver.SearchOptions)
  assert settings['options'].algorithm == 'random'
  assert settings['reward_metric'] == 'AP'


def test_retinanet_args_are_those_of_the_builders():
  assert {'model_id', 'num_classes', 'filter_size_scale', 'block_specs',
          'head_filters'} <= registrations.RETINANET_ARGS
  assert 'backbone_overrides' not in registrations.RETINANET_ARGS
