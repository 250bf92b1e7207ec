"""The Inception network of the paper's sample-quality metrics, loaded lazily from TF-GAN's frozen graph.

The original release evaluated IS and FID with TF-GAN's TPU-compatible frozen Inception graph
(`inceptionv1_for_inception_score_tpu.pb` inside `frozen_inception_v1_2015_12_05_v4.tar.gz`), fed through
tfgan.eval.run_inception's input `Mul:0` after tfgan.eval.preprocess_image, reading `pool_3:0` (2048 features, for
FID) and `logits:0` (1008 classes, for IS). This module does the same, but:
  - nothing is loaded at import; the graph is read on first use and memoized;
  - the graph can come from a local `.pb` or `.tar.gz` (argument, or env var DIFFUSION_TF_INCEPTION_GRAPH), a
    `file://` URL, or the download URL; URLs are copied once into the cache dir ($DIFFUSION_TF_CACHE, default
    ~/.cache/diffusion_tf, sub-folder `inception/`), so evaluation runs offline;
  - the graph is identified by the sha256 of its `.pb` bytes, which the evaluation outputs record.

Public API:
  load_inception_graph(path=None) -> InceptionGraph(graph_def, path, sha256)
  get_inception_graph_def(path=None) -> tf.GraphDef
  preprocess_images(images) -> [B, 299, 299, 3] float32 network input      (TF graph level)
  run_inception(preprocessed, graph_def=None) -> {'pool_3': [B, 2048], 'logits': [B, 1008]}   (TF graph level)
  inception_features(images, graph_def=None) -> same dict, from uint8 or [-1, 1] float images (TF graph level)
  InceptionExtractor(path=None, batch_size=100).features(images) -> (pool_3 [N, 2048], logits [N, 1008]) float64

See docs/metrics.md for where to get the graph and the exact definitions of the numbers.
"""

import collections
import functools
import hashlib
import os
import shutil
import tarfile
import urllib.parse
import urllib.request

import numpy as np
import tensorflow.compat.v1 as tf

from .errors import InceptionGraphError

INCEPTION_URL = 'http://download.tensorflow.org/models/frozen_inception_v1_2015_12_05_v4.tar.gz'
INCEPTION_FROZEN_GRAPH = 'inceptionv1_for_inception_score_tpu.pb'
INCEPTION_INPUT = 'Mul:0'  # tfgan.eval.INCEPTION_INPUT: [B, 299, 299, 3] float32 in [-1, 1]
INCEPTION_FINAL_POOL = 'pool_3:0'  # [B, 1, 1, 2048] in the graph; flattened to [B, 2048]
INCEPTION_OUTPUT = 'logits:0'  # [B, 1008]
INCEPTION_IMAGE_SIZE = 299
POOL_DIM = 2048
NUM_LOGITS = 1008

GRAPH_ENV_VAR = 'DIFFUSION_TF_INCEPTION_GRAPH'
CACHE_ENV_VAR = 'DIFFUSION_TF_CACHE'

InceptionGraph = collections.namedtuple('InceptionGraph', ['graph_def', 'path', 'sha256'])


# ---------------------------------------------------------------------------------------------------------------
# Locating and loading the frozen graph

def cache_dir():
  """Where downloaded files are kept: $DIFFUSION_TF_CACHE, else ~/.cache/diffusion_tf."""
  return os.path.expanduser(os.environ.get(CACHE_ENV_VAR) or os.path.join('~', '.cache', 'diffusion_tf'))


def _missing_graph_message(detail):
  target = os.path.join(cache_dir(), 'inception', os.path.basename(INCEPTION_URL))
  return ('{}. The Inception graph is needed for IS/FID: on a machine with internet run '
          '`mkdir -p {} && wget {} -O {}` (or copy that file there), or pass a local .tar.gz/.pb via '
          '--inception_graph or {}=/path/to/{}'.format(detail, os.path.dirname(target), INCEPTION_URL, target,
                                                       GRAPH_ENV_VAR, os.path.basename(INCEPTION_URL)))


def _fetch_url(url):
  """Copy a file:// or http(s):// URL once into cache_dir()/inception/ (temp name, then rename); return its path."""
  parsed = urllib.parse.urlparse(url)
  target = os.path.join(cache_dir(), 'inception', os.path.basename(parsed.path))
  if os.path.isfile(target):
    return target
  os.makedirs(os.path.dirname(target), exist_ok=True)
  tmp = '{}.tmp{}'.format(target, os.getpid())
  try:
    if parsed.scheme == 'file':
      source = urllib.request.url2pathname(parsed.path)
      if not os.path.isfile(source):
        raise InceptionGraphError(_missing_graph_message('Inception graph URL {} does not exist'.format(url)))
      shutil.copyfile(source, tmp)
    else:
      tf.logging.info('Downloading the Inception graph %s -> %s', url, target)
      try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, 'wb') as f:
          shutil.copyfileobj(response, f)
      except Exception as e:  # network errors come in many types (URLError, socket errors, timeouts)
        raise InceptionGraphError(_missing_graph_message(
          'could not download {} ({}: {})'.format(url, type(e).__name__, e))) from None
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return target


def resolve_inception_graph_path(path=None):
  """The local file to load: `path`, else $DIFFUSION_TF_INCEPTION_GRAPH, else INCEPTION_URL (downloaded once).

  A plain path is used in place; a file:// or http(s):// URL is copied into the cache first.
  """
  spec = path or os.environ.get(GRAPH_ENV_VAR) or INCEPTION_URL
  spec = os.fspath(spec)
  if urllib.parse.urlparse(spec).scheme in ('file', 'http', 'https'):
    return _fetch_url(spec)
  local = os.path.abspath(os.path.expanduser(spec))
  if not os.path.isfile(local):
    raise InceptionGraphError(_missing_graph_message('Inception graph file {} does not exist'.format(local)))
  return local


def _read_pb_bytes(local_path):
  """The frozen graph's bytes from a .pb file or from the INCEPTION_FROZEN_GRAPH member of a tarball."""
  if not tarfile.is_tarfile(local_path):
    with open(local_path, 'rb') as f:
      return f.read()
  with tarfile.open(local_path, 'r:*') as tar:
    members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith('.pb')]
    named = [m for m in members if os.path.basename(m.name) == INCEPTION_FROZEN_GRAPH]
    if named:
      member = named[0]
    elif len(members) == 1:
      member = members[0]
      tf.logging.warning('%s has no %s; using its only graph %s', local_path, INCEPTION_FROZEN_GRAPH, member.name)
    else:
      raise InceptionGraphError('{} contains no {} (its .pb files: {}); expected the tarball {}'.format(
        local_path, INCEPTION_FROZEN_GRAPH, [m.name for m in members] or 'none', INCEPTION_URL))
    return tar.extractfile(member).read()


@functools.lru_cache(maxsize=2)
def _load_graph(local_path, mtime_ns, size):
  """Parse and check one graph file; memoized on (path, mtime, size) so a training job parses it once."""
  del mtime_ns, size  # only part of the cache key
  data = _read_pb_bytes(local_path)
  graph_def = tf.GraphDef()
  try:
    graph_def.ParseFromString(data)
  except Exception as e:  # protobuf's DecodeError
    raise InceptionGraphError('{} is not a frozen TensorFlow graph ({})'.format(local_path, e)) from None
  node_names = {node.name for node in graph_def.node}
  missing = [name for name in (INCEPTION_INPUT, INCEPTION_FINAL_POOL, INCEPTION_OUTPUT)
             if name.split(':')[0] not in node_names]
  if missing:
    raise InceptionGraphError('{} is not the Inception graph: it has no tensors {}'.format(local_path, missing))
  return InceptionGraph(graph_def=graph_def, path=local_path, sha256=hashlib.sha256(data).hexdigest())


def load_inception_graph(path=None):
  """Find, fetch if needed, and parse the frozen Inception graph.

  :param path: a .pb or .tar.gz path or a file:// / http(s):// URL; default $DIFFUSION_TF_INCEPTION_GRAPH, else
    INCEPTION_URL cached under cache_dir().
  :return: InceptionGraph(graph_def, path (the local file read), sha256 (of the .pb bytes: the graph's identity)).
  :raises InceptionGraphError: with one message saying what to download and where, if the graph is unavailable.
  """
  local = resolve_inception_graph_path(path)
  stat = os.stat(local)
  return _load_graph(local, stat.st_mtime_ns, stat.st_size)


def get_inception_graph_def(path=None):
  """The tf.GraphDef of load_inception_graph(path)."""
  return load_inception_graph(path).graph_def


# ---------------------------------------------------------------------------------------------------------------
# The network in a TF graph (usable inside an Estimator / TPU computation)

def preprocess_images(images):
  """Images -> the Inception input, exactly as the original evaluation did.

  uint8 pixels {0..255} (real data) go straight to tfgan.eval.preprocess_image; float images in [-1, 1] (model
  samples) are first clipped to [-1, 1] and mapped to [0, 255] by (x + 1) * 127.5, without rounding.
  preprocess_image then resizes bilinearly to 299 x 299 and maps to (x - 128) / 128.

  :param images: [B, H, W, 3] uint8 or float tensor.
  :return: [B, 299, 299, 3] float32 tensor.
  """
  images = tf.convert_to_tensor(images)
  assert images.shape.ndims == 4 and images.shape.as_list()[-1] == 3, images.shape
  if images.dtype == tf.uint8:
    pixels = tf.cast(images, tf.float32)
  elif images.dtype.is_floating:
    pixels = (tf.clip_by_value(tf.cast(images, tf.float32), -1., 1.) + 1.) * 127.5
  else:
    raise ValueError('images must be uint8 or float in [-1, 1], got {}'.format(images.dtype))
  return preprocess_pixels(pixels)


def preprocess_pixels(pixels):
  """tfgan.eval.preprocess_image of the TF-GAN the original used (0.0.0.dev0; TF-GAN 2 dropped it): float pixels
  [B, H, W, 3] in [0, 255] -> [B, 299, 299, 3] in [-1, 1], the v1 bilinear resize (no half-pixel centres)."""
  with tf.name_scope('preprocess'):
    resized = tf.image.resize_bilinear(pixels, [INCEPTION_IMAGE_SIZE, INCEPTION_IMAGE_SIZE])
    out = (resized - 128.0) / 128.0
  assert out.shape.as_list()[1:] == [INCEPTION_IMAGE_SIZE, INCEPTION_IMAGE_SIZE, 3]
  return out


def run_inception(preprocessed, graph_def=None):
  """The Inception graph on preprocessed images (what tfgan.eval.run_inception computes, without tf.contrib).

  :param preprocessed: [B, 299, 299, 3] float32 in [-1, 1] (from preprocess_images).
  :param graph_def: the frozen graph; default get_inception_graph_def() (loaded now, at graph-construction time).
  :return: {'pool_3': [B, 2048] float32, 'logits': [B, 1008] float32}.
  """
  if graph_def is None:
    graph_def = get_inception_graph_def()
  B = preprocessed.shape.as_list()[0]
  pool_3, logits = tf.import_graph_def(
    graph_def, input_map={INCEPTION_INPUT: preprocessed}, return_elements=[INCEPTION_FINAL_POOL, INCEPTION_OUTPUT],
    name='RunClassifier')
  out = {'pool_3': _flatten(pool_3, B), 'logits': _flatten(logits, B)}  # pool_3 is [B, 1, 1, 2048] in the graph
  return out


def _flatten(x, static_batch):
  """[B, ...] -> [B, prod(...)], keeping static shapes where known (TPU programs need them)."""
  inner = x.shape.as_list()[1:] if x.shape.ndims is not None else [None]
  dim = int(np.prod(inner)) if None not in inner else -1
  y = tf.reshape(x, [static_batch if static_batch is not None else tf.shape(x)[0], dim])
  y.set_shape([static_batch, dim if dim > 0 else None])
  return y


def inception_features(images, graph_def=None):
  """run_inception(preprocess_images(images)): uint8 or [-1, 1] float images [B, H, W, 3] -> pool_3, logits."""
  return run_inception(preprocess_images(images), graph_def=graph_def)


# ---------------------------------------------------------------------------------------------------------------
# numpy in, numpy out

def images_to_pixels(images):
  """numpy twin of preprocess_images' first step: uint8 -> float32 pixels; float [-1, 1] -> (clip(x) + 1) * 127.5.

  :param images: [N, H, W, 3] uint8 or float array.
  :return: [N, H, W, 3] float32 pixels in [0, 255].
  """
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError('images must have shape [N, H, W, 3], got {}'.format(images.shape))
  if images.dtype == np.uint8:
    return images.astype(np.float32)
  if np.issubdtype(images.dtype, np.floating):
    return (np.clip(images.astype(np.float32), -1., 1.) + np.float32(1.)) * np.float32(127.5)
  raise ValueError('images must be uint8 in {{0..255}} or float in [-1, 1], got dtype {}'.format(images.dtype))


class InceptionExtractor:
  """Inception features of numpy images, with its own tf.Graph and tf.Session (CPU or GPU).

  Usage:
    with InceptionExtractor(path=None, batch_size=100) as extractor:
      pool_3, logits = extractor.features(uint8_images)  # [N, 2048], [N, 1008] float64
    extractor.graph_path, extractor.graph_sha256  # which graph produced them
  """

  def __init__(self, path=None, batch_size=100, session_config=None):
    """
    :param path: the Inception graph (see load_inception_graph); loaded here.
    :param batch_size: images per session run.
    :param session_config: optional tf.ConfigProto (default: soft placement, GPU memory growth).
    """
    if int(batch_size) < 1:
      raise ValueError('batch_size must be >= 1, got {}'.format(batch_size))
    self.batch_size = int(batch_size)
    graph = load_inception_graph(path)
    self.graph_path, self.graph_sha256 = graph.path, graph.sha256
    self._graph = tf.Graph()
    with self._graph.as_default():
      self._pixels = tf.placeholder(tf.float32, [None, None, None, 3], name='pixels')  # from images_to_pixels
      self._outputs = run_inception(preprocess_pixels(self._pixels), graph_def=graph.graph_def)
    self._graph.finalize()
    if session_config is None:
      session_config = tf.ConfigProto(allow_soft_placement=True)
      session_config.gpu_options.allow_growth = True
    self._sess = tf.Session(graph=self._graph, config=session_config)

  def features(self, images):
    """pool_3 [N, 2048] and logits [N, 1008] (float64) of images [N, H, W, 3], uint8 or float in [-1, 1]."""
    images = np.asarray(images)
    images_to_pixels(images[:0])  # check shape and dtype before any work
    if images.shape[0] == 0:
      raise ValueError('images is empty')
    pools, logits = [], []
    for start in range(0, images.shape[0], self.batch_size):
      pixels = images_to_pixels(images[start:start + self.batch_size])  # per batch: float32 copies stay small
      out = self._sess.run(self._outputs, {self._pixels: pixels})
      pools.append(out['pool_3'])
      logits.append(out['logits'])
    return np.concatenate(pools).astype(np.float64), np.concatenate(logits).astype(np.float64)

  def close(self):
    self._sess.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
