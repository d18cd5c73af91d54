"""The demo's last step: export the trained model, predict one image, draw it.

`spinenet.demo` calls `export_and_predict` after training; it is also a
compact example of the serving API:

  result = export_and_predict(['experiments/demo_cpu.gin'], params,
                              'demo_output/model', 'demo_output/export',
                              'demo_output/shapes/val/000001.jpg',
                              'demo_output/prediction.png')
"""
import io
from typing import Sequence

import numpy as np
from PIL import Image

from spinenet.serving import client
from spinenet.serving import export_lib
from spinenet.serving import predict_lib


def export_and_predict(gin_files: Sequence[str], gin_params: Sequence[str],
                       checkpoint: str, export_dir: str, image_path: str,
                       output_path: str, *, min_score: float = 0.3,
                       options: export_lib.ExportOptions = export_lib.ExportOptions()
                       ) -> dict:
  """Exports `checkpoint` as a new version under `export_dir`, predicts one image.

  Args:
    gin_files, gin_params: the training configuration (model and data).
    checkpoint: checkpoint prefix or model_dir (latest checkpoint).
    export_dir: model base path; a new numbered version is written.
    image_path: an image file to predict.
    output_path: where the annotated image is written (PNG or JPEG by
      extension).
    min_score: detections below it are not drawn or returned.
    options: `export_lib.ExportOptions`.

  Returns:
    dict with `export_path` (the version directory), `version`,
    `output_path`, `detections` (list of `{box, class, name, score}`, boxes
    ymin, xmin, ymax, xmax in pixels of the image) and `export_info`.
  """
  exported = export_lib.export_from_config(gin_files, gin_params, export_dir,
                                           checkpoint=checkpoint, options=options)
  with open(image_path, 'rb') as f:
    encoded = f.read()
  [prediction] = client.LocalPredictor(exported.path).predict([encoded])
  image = np.asarray(Image.open(io.BytesIO(encoded)).convert('RGB'))
  drawn, info = predict_lib.annotate(image, prediction, min_score)
  Image.fromarray(drawn).save(output_path)
  return dict(export_path=exported.path, version=exported.version,
              output_path=output_path, export_info=exported.info, **info)
