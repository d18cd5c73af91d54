r"""spinenet-describe: parameters, FLOPs and block graph of a model id.

  spinenet-describe --model 49 --image_size 640 --task retinanet --json
  spinenet-describe --model mobile-49S --task backbone --plot spine.png
  spinenet-describe --model 49 --task maskrcnn
"""
import json

from absl import app
from absl import flags

flags.DEFINE_string('model', '49', 'Model id: 49S, 49, 96, 143, 190, mobile-49, '
                    'mobile-49S, mobile-49XS, resnet50-fpn, resnet101-fpn, resnet152-fpn.')
flags.DEFINE_integer('image_size', None, 'Square input size in pixels (default: the '
                     "id's, or 224 for classification).")
flags.DEFINE_enum('task', 'retinanet', ['retinanet', 'maskrcnn', 'classification',
                                        'backbone'],
                  'What to build on the backbone.')
flags.DEFINE_integer('num_classes', None, 'Classes (default 91 for retinanet, 1000 '
                     'for classification).')
flags.DEFINE_bool('json', False, 'Print one JSON object as the last line.')
flags.DEFINE_string('plot', None, 'Write the block graph to this PNG file.')
FLAGS = flags.FLAGS


def format_report(r):
  """Human-readable table of a `profile.describe` result."""
  lines = [f"{r['model']} {r['task']} @ {r['image_size']}x{r['image_size']}"
           + (f", {r['num_classes']} classes" if r['num_classes'] else '')]
  lines.append(f"{'part':<14}{'params':>14}{'trainable':>14}{'non-train.':>12}"
               f"{'GFLOPs (MAdds)':>17}")
  parts = list(r['params_detail'])
  parts += [p for p in r['flops_detail'] if p not in parts]
  parts.remove('total')
  for part in parts + ['total']:
    p = r['params_detail'].get(part)
    flops = r['flops_detail'].get(part)
    row = (f"{p['total']:>14,}{p['trainable']:>14,}{p['non_trainable']:>12,}" if p
           else f"{'':>14}{'':>14}{'':>12}")
    lines.append(f"{part:<14}{row}" + (f'{flops / 1e9:>17.3f}' if flops is not None
                                         else f"{'-':>17}"))
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from spinenet.modeling import plot  # pylint: disable=g-import-not-at-top
  from spinenet.modeling import profile  # pylint: disable=g-import-not-at-top
  from spinenet.modeling import registry  # pylint: disable=g-import-not-at-top
  try:
    model_id = registry.resolve(FLAGS.model)
  except ValueError as e:
    raise app.UsageError(f'--model: {e}') from None
  result, _ = profile.describe(model_id, FLAGS.image_size, FLAGS.task,
                               FLAGS.num_classes)
  print(format_report(result))
  if FLAGS.plot:
    spec = registry.get_spec(model_id)
    if spec.family == 'resnet_fpn':
      raise app.UsageError('--plot draws scale-permuted block graphs; '
                           f'{model_id} is not scale-permuted.')
    plot.plot_block_graph(spec.block_specs, FLAGS.plot,
                          title=f'SpineNet-{model_id} block graph')
    print(f'block graph written to {FLAGS.plot}')
  if FLAGS.json:
    print(json.dumps(result, sort_keys=True))


def run():
  app.run(main)


if __name__ == '__main__':
  run()
