"""Names of the exported signatures, their inputs and outputs.

Every string a client or server needs is a constant here, so the exporter,
`spinenet-serve` and `spinenet-predict` cannot drift apart.

Signatures (all take a batch):

| signature | input | dtype, shape |
|---|---|---|
| `serving_default` | `images` | uint8 `[B, H, W, 3]`, any H, W (one size per batch) |
| `serve_bytes` | `image_bytes` | string `[B]`, encoded JPEG / PNG (GIF, BMP) |
| `serve_tf_example` | `tf_examples` | string `[B]`, serialized `tf.train.Example`s with `image/encoded` |

Detection outputs: `detection_boxes` float32 `[B, N, 4]` (ymin, xmin, ymax,
xmax in pixels of the caller's image), `detection_scores` float32 `[B, N]`,
`detection_classes` int32 `[B, N]` (dataset category ids),
`detection_class_names` string `[B, N]`, `num_detections` int32 `[B]`; rows
past `num_detections` are zeros (names empty).

Mask R-CNN exports add, by their `mask_format`: `detection_masks` uint8
`[B, N, H, W]` (default 'dense'), each detection's mask in the caller's
pixels, 0/1; or `detection_masks_png_bytes` string `[B, N]` ('png'), each a
grayscale PNG of that 0/1 mask at the image's own size ('' past
`num_detections`). `H, W` is the largest image size of the batch; image i's
masks fill its top-left `h_i x w_i`. See docs/serving.md.

Classification outputs: `logits` and `probabilities` float32 `[B, K]`,
`top_k_classes` int32 `[B, k]` (category ids), `top_k_scores` float32
`[B, k]` (probabilities), `top_k_class_names` string `[B, k]`.
"""
import tensorflow as tf

SERVE_TAG = 'serve'

# === Signatures and their inputs ===
IMAGE_TENSOR = 'serving_default'
IMAGE_BYTES = 'serve_bytes'
TF_EXAMPLE = 'serve_tf_example'
SIGNATURES = (IMAGE_TENSOR, IMAGE_BYTES, TF_EXAMPLE)

INPUT_KEYS = {
    IMAGE_TENSOR: 'images',
    IMAGE_BYTES: 'image_bytes',
    TF_EXAMPLE: 'tf_examples',
}
INPUT_SPECS = {
    IMAGE_TENSOR: tf.TensorSpec([None, None, None, 3], tf.uint8, name='images'),
    IMAGE_BYTES: tf.TensorSpec([None], tf.string, name='image_bytes'),
    TF_EXAMPLE: tf.TensorSpec([None], tf.string, name='tf_examples'),
}

# === Detection outputs ===
DETECTION_BOXES = 'detection_boxes'
DETECTION_SCORES = 'detection_scores'
DETECTION_CLASSES = 'detection_classes'
DETECTION_CLASS_NAMES = 'detection_class_names'
NUM_DETECTIONS = 'num_detections'
DETECTION_OUTPUTS = (DETECTION_BOXES, DETECTION_SCORES, DETECTION_CLASSES,
                     DETECTION_CLASS_NAMES, NUM_DETECTIONS)

# === Instance segmentation (Mask R-CNN) outputs, one of, by mask format ===
DETECTION_MASKS = 'detection_masks'
# Names ending in `_bytes` are sent as {"b64": ...} over REST (TF Serving's rule).
DETECTION_MASKS_PNG = 'detection_masks_png_bytes'
MASK_FORMATS = ('dense', 'png')
MASK_OUTPUTS = {'dense': DETECTION_MASKS, 'png': DETECTION_MASKS_PNG}

# === Classification outputs ===
LOGITS = 'logits'
PROBABILITIES = 'probabilities'
TOP_K_CLASSES = 'top_k_classes'
TOP_K_SCORES = 'top_k_scores'
TOP_K_CLASS_NAMES = 'top_k_class_names'
CLASSIFICATION_OUTPUTS = (LOGITS, PROBABILITIES, TOP_K_CLASSES, TOP_K_SCORES,
                          TOP_K_CLASS_NAMES)

# === Assets ===
LABEL_MAP_ASSET = 'label_map.json'
EXPORT_INFO_ASSET = 'export_info.json'
