"""Everything gin can configure, under the names the gin files use.

Each builder and option class of the library is registered under a short
name and as `spinenet.<name>`: `build_retinanet`, `DetectionConfig`,
`RetinaNetTask`, `DataOptions`, `LossOptions`, `OptimizerOptions`,
`TrainerOptions`, `build_maskrcnn`, `MaskRCNNTask`, `MaskRCNNDataOptions`,
`MaskRCNNLossOptions`, `ProposalConfig`, `ROISamplerConfig`,
`MaskRCNNDetectionConfig`, `build_classifier`, `ClassificationTask`,
`ClassificationDataOptions`, `SearchOptions`, `BuiltinDataset`, and the two
functions defined here, `experiment` (what a training config describes) and
`search` (what a search config adds).
"""
import dataclasses
import inspect

import gin

from spinenet.modeling import maskrcnn
from spinenet.modeling import registry
from spinenet.modeling import retinanet
from spinenet.modeling import spinenet as spinenet_lib
from spinenet.search import driver
from spinenet.search import proxy
from spinenet.training import classification_task
from spinenet.training import losses
from spinenet.training import maskrcnn_losses
from spinenet.training import maskrcnn_task
from spinenet.training import optimization
from spinenet.training import retinanet_task
from spinenet.training import train_lib

MODULE = 'spinenet'


def _register(fn_or_class, name):
  return gin.external_configurable(fn_or_class, name, module=MODULE)


# Detection.
build_retinanet = _register(registry.build_retinanet, 'build_retinanet')
DetectionConfig = _register(retinanet.DetectionConfig, 'DetectionConfig')
RetinaNetTask = _register(retinanet_task.RetinaNetTask, 'RetinaNetTask')
DataOptions = _register(retinanet_task.DataOptions, 'DataOptions')
LossOptions = _register(losses.LossOptions, 'LossOptions')
# Instance segmentation (Mask R-CNN).
build_maskrcnn = _register(registry.build_maskrcnn, 'build_maskrcnn')
MaskRCNNTask = _register(maskrcnn_task.MaskRCNNTask, 'MaskRCNNTask')
MaskRCNNDataOptions = _register(maskrcnn_task.MaskRCNNDataOptions,
                                'MaskRCNNDataOptions')
MaskRCNNLossOptions = _register(maskrcnn_losses.MaskRCNNLossOptions,
                                'MaskRCNNLossOptions')
ProposalConfig = _register(maskrcnn.ProposalConfig, 'ProposalConfig')
ROISamplerConfig = _register(maskrcnn.ROISamplerConfig, 'ROISamplerConfig')
MaskRCNNDetectionConfig = _register(maskrcnn.DetectionConfig,
                                    'MaskRCNNDetectionConfig')
# Training, any task.
OptimizerOptions = _register(optimization.OptimizerOptions, 'OptimizerOptions')
TrainerOptions = _register(train_lib.TrainerOptions, 'TrainerOptions')
# Classification.
build_classifier = _register(registry.build_classifier, 'build_classifier')
ClassificationTask = _register(classification_task.ClassificationTask,
                               'ClassificationTask')
ClassificationDataOptions = _register(
    classification_task.ClassificationDataOptions, 'ClassificationDataOptions')
# Architecture search.
SearchOptions = _register(driver.SearchOptions, 'SearchOptions')
BuiltinDataset = _register(proxy.BuiltinDataset, 'BuiltinDataset')


@gin.configurable('experiment', module=MODULE)
def experiment(task=gin.REQUIRED, optimizer_options=gin.REQUIRED,
               trainer_options=gin.REQUIRED):
  """What a gin config describes: `(task, optimizer_options, trainer_options)`."""
  return task, optimizer_options, trainer_options


@gin.configurable('search', module=MODULE)
def search_settings(options=None, builtin_dataset=None, reward_metric='AP',
                    count_flops=True):
  """What a search gin file binds besides the proxy's experiment.

  Args:
    options: `SearchOptions` (default: `SearchOptions()` with its bindings).
    builtin_dataset: `BuiltinDataset` to generate the data into
      `<search_dir>/data` and bind TRAIN/EVAL_FILE_PATTERN and
      EVAL_ANNOTATIONS_JSON to it; None: the gin files set the data.
    reward_metric: COCO metric rewarded ('AP', 'AP50' or 'AP75').
    count_flops: count each trial's multiply-adds.

  Returns:
    dict with those four keys.
  """
  return dict(options=options or SearchOptions(), builtin_dataset=builtin_dataset,
              reward_metric=reward_metric, count_flops=count_flops)


# build_retinanet takes **backbone_overrides, so gin accepts any name there;
# these are the ones that exist (parsing refuses the others).
RETINANET_ARGS = frozenset(
    (set(inspect.signature(registry.build_retinanet).parameters) |
     set(inspect.signature(spinenet_lib.build_spinenet).parameters)) -
    {'backbone_overrides', 'input_shape', 'name'})

# build_maskrcnn takes **overrides (head recipe fields and backbone arguments).
MASKRCNN_ARGS = frozenset(
    (set(inspect.signature(registry.build_maskrcnn).parameters) |
     {f.name for f in dataclasses.fields(registry.MaskRCNNSpec)} |
     set(inspect.signature(spinenet_lib.build_spinenet).parameters)) -
    {'overrides', 'input_shape', 'name'})
