"""Prepares a tfds dataset in the array_record format genjax reads.

    pip install 'genjax[prepare]'   # TensorFlow: tfds encodes the images with it while preparing
    python -m genjax.data.prepare mnist --data_dir=DIR

then train anywhere with ``--config.data.name=mnist --config.data.data_dir=DIR`` (reading
needs no TensorFlow). This is ``tfds.builder(NAME, data_dir=DIR,
file_format='array_record').download_and_prepare()``, the same step
``--config.data.download=True`` takes on first use. The tfds command line (``tfds
build``) would also work but needs Apache Beam, whose pins (protobuf < 7, pillow < 13,
pyarrow < 26 in apache-beam 2.77) conflict with genjax's.
"""

from __future__ import annotations

import argparse
import logging
import sys

from genjax.data.errors import DataConfigError
from genjax.data.tfds_input import TFDS_DATASETS, DatasetUnavailableError, needs_tensorflow

log = logging.getLogger("genjax")


def preparation_message(name: str, data_dir: str | None, error: BaseException) -> str:
  """One line saying why preparing ``name`` failed and what to do."""
  where = data_dir or "the tfds default data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
  if needs_tensorflow(error):
    return (
      f"preparing tfds dataset {name!r} needs TensorFlow (tfds encodes the images with it), which is not "
      "installed: pip install 'genjax[prepare]'"
    )
  first = str(error).strip().splitlines()[0] if str(error).strip() else ""
  hint = "it downloads the source files, so it needs network access"
  if TFDS_DATASETS[name].manual_download:
    hint += f", or the files placed in --manual_dir (see https://www.tensorflow.org/datasets/catalog/{name})"
  return f"preparing tfds dataset {name!r} in {where} failed ({hint}): {type(error).__name__}: {first}"


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None) -> str:
  """Downloads and prepares genjax's tfds dataset ``name`` as array_record files.

  Args:
    name: a key of ``tfds_input.TFDS_DATASETS`` ('mnist', 'cifar10', ...).
    data_dir: the tfds data_dir to write (None = the tfds default).
    manual_dir: where manually downloaded source files are (celeb_a), or None.

  Returns:
    The prepared dataset's directory (``data_dir/NAME/VERSION``). A dataset already
    prepared there is left as it is.

  Raises:
    DataConfigError: ``name`` is not one of genjax's tfds datasets.
    DatasetUnavailableError: preparing failed; the message says why (no TensorFlow,
      no network, missing manual files).
  """
  if name not in TFDS_DATASETS:
    raise DataConfigError(f"unknown tfds dataset {name!r}; genjax reads {', '.join(sorted(TFDS_DATASETS))}")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = tfds.builder(TFDS_DATASETS[name].tfds_name, data_dir=data_dir, file_format="array_record")
  if builder.is_prepared():
    log.info("%s is already prepared in %s", name, builder.data_dir)
    return str(builder.data_dir)
  try:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  except Exception as e:  # tfds raises many types: network, checksums, missing modules, ...
    raise DatasetUnavailableError(preparation_message(name, data_dir, e)) from e
  log.info("prepared %s in %s", name, builder.data_dir)
  return str(builder.data_dir)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m genjax.data.prepare",
    description="Download a tfds dataset and prepare it in the array_record format genjax reads "
    "(needs network and TensorFlow: pip install 'genjax[prepare]').",
  )
  parser.add_argument("name", help=f"one of {', '.join(sorted(TFDS_DATASETS))}")
  parser.add_argument("--data_dir", default=None, help="tfds data_dir to write (default: the tfds default)")
  parser.add_argument("--manual_dir", default=None, help="directory of manually downloaded files (celeb_a)")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  try:
    path = prepare(args.name, args.data_dir, args.manual_dir)
  except (DataConfigError, DatasetUnavailableError) as e:
    sys.stderr.write(f"error: {e}\n")
    return 1
  print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
