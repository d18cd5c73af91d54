"""REINFORCE controller: decision coding, exact gradients, learning, state."""
import math

import numpy as np
import tensorflow as tf

from spinenet.modeling import block_specs as specs_lib
from spinenet.search import reinforce
from spinenet.search import space as space_lib


def _tf_loss(controller, indices, masks, advantage):
  """The REINFORCE loss written with TF ops on the controller's weights."""
  names = list(controller.params)
  variables = {k: tf.Variable(controller.params[k]) for k in names}
  h_size = controller.hidden_size
  with tf.GradientTape() as tape:
    h = tf.zeros([1, h_size], tf.float64)
    c = tf.zeros([1, h_size], tf.float64)
    x = variables['go'][None]
    loss = tf.constant(0.0, tf.float64)
    for t, (a, mask) in enumerate(zip(indices, masks)):
      z = tf.concat([x, h], 1) @ variables['lstm_kernel'] + variables['lstm_bias']
      i, f, o, g = tf.split(z, 4, axis=1)
      c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
      h = tf.sigmoid(o) * tf.tanh(c)
      logits = h @ variables[f'softmax_kernel_{t}'] + variables[f'softmax_bias_{t}']
      logits = tf.boolean_mask(logits[0], mask)
      log_p = tf.nn.log_softmax(logits)
      position = int(np.sum(mask[:a]))  # index of `a` among the valid options
      entropy = -tf.reduce_sum(tf.exp(log_p) * log_p)
      loss += -advantage * log_p[position] - controller.entropy_weight * entropy
      x = variables[f'embedding_{t}'][a][None]
  grads = tape.gradient(loss, [variables[k] for k in names])
  return float(loss), {k: (tf.convert_to_tensor(g).numpy() if g is not None
                           else np.zeros_like(controller.params[k]))
                       for k, g in zip(names, grads)}


class DecisionSequenceTest(tf.test.TestCase):

  def test_encode_decode_round_trip(self):
    space = space_lib.SearchSpace()
    decisions = reinforce.DecisionSequence(space)
    self.assertLen(decisions, 10 * 5 + 5 * 4)
    rng = np.random.default_rng(0)
    for arch in [space.sample(rng) for _ in range(50)] + [
        space.from_block_specs(specs_lib.SPINENET_49)]:
      indices = decisions.encode(arch)
      self.assertEqual(decisions.decode(indices), arch)
      for t, a in enumerate(indices):  # the encoding never takes a masked option
        self.assertTrue(decisions.mask(t, indices[:t])[a])


class ReinforceControllerTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.space = space_lib.SearchSpace()

  def test_starts_uniform_over_valid_options(self):
    controller = reinforce.ReinforceController(self.space, seed=0)
    arch = self.space.from_block_specs(specs_lib.SPINENET_49)
    indices = controller.decisions.encode(arch)
    expected = -sum(math.log(controller.decisions.mask(t, indices[:t]).sum())
                    for t in range(len(indices)))
    self.assertAllClose(controller.log_prob(arch), expected)

  def test_gradients_match_tensorflow(self):
    controller = reinforce.ReinforceController(self.space, seed=3,
                                               hidden_size=8, embedding_size=4,
                                               entropy_weight=0.05)
    rng = np.random.default_rng(3)
    for name, value in controller.params.items():  # non-trivial softmax layers
      value[...] = rng.normal(0, 0.3, value.shape)
    arch = controller.ask()
    indices = controller.decisions.encode(arch)
    masks = [controller.decisions.mask(t, indices[:t]) for t in range(len(indices))]
    flat, loss = controller.gradients(indices, advantage=0.7)
    tf_loss, tf_grads = _tf_loss(controller, indices, masks, 0.7)
    self.assertAllClose(loss, tf_loss)
    grads = controller.grad_dict(flat)
    for name in controller.params:
      self.assertAllClose(grads[name], tf_grads[name], atol=1e-10, msg=name)

  def test_a_rewarded_architecture_becomes_likely(self):
    controller = reinforce.ReinforceController(self.space, seed=0)
    target = self.space.from_block_specs(specs_lib.SPINENET_49)
    controller.tell(controller.ask(), 0.0)  # the baseline starts at 0
    before = controller.log_prob(target)
    log_probs = []
    for _ in range(10):
      controller.tell(target, 1.0)
      log_probs.append(controller.log_prob(target))
    self.assertGreater(log_probs[-1], before + 20)
    self.assertGreater(log_probs[-1], log_probs[4])

  def test_state_round_trip_continues_the_same_search(self):
    first = reinforce.ReinforceController(self.space, seed=1)
    for reward in (0.1, 0.5, 0.3):
      first.tell(first.ask(), reward)
    second = reinforce.ReinforceController(self.space, seed=99)
    second.set_state(first.get_state())
    for reward in (0.2, 0.9):
      a, b = first.ask(), second.ask()
      self.assertEqual(a, b)
      first.tell(a, reward)
      second.tell(b, reward)
    self.assertAllEqual(first.get_state()['arrays']['weights'],
                        second.get_state()['arrays']['weights'])

  def test_set_state_rejects_other_sizes(self):
    state = reinforce.ReinforceController(self.space, hidden_size=16).get_state()
    with self.assertRaisesRegex(ValueError, 'hidden_size'):
      reinforce.ReinforceController(self.space, hidden_size=8).set_state(state)


if __name__ == '__main__':
  tf.test.main()
