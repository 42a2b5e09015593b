"""The declaration of a dataset source's ``options``, as the config check reads it.

Each source declares its options in its registry entry (``DatasetSpec.options``,
``DenseDatasetSpec.options``): a :class:`medtl.settings.Settings`, or a plain dict of defaults, read as
settings of the defaults' types. A source that reads files from the ``raw_data`` folder (it declares a
``raw_data`` option) is located by :mod:`medtl.data.sources.common`, so it also takes the options that
module reads, declared here once. Every source, classification or dense, takes the options of how its
images become 8 bits (:data:`IMAGE`, read by :mod:`medtl.data.imageio`), declared here once too.
"""
from __future__ import annotations

from medtl.settings import Bool, Choice, Int, Number, Settings, Table, Text

LOCATED = Settings(
    raw_data=Text("raw", doc="folder with the files put there by hand (the config's raw_data)"),
    root=Text(None, nullable=True, doc="an unpacked copy of the source, used in place of its archive"),
    archive=Text(None, nullable=True, doc="path of the source's archive (single-archive sources)"),
    files=Table({}, values=Text(), doc="file name -> path of a file put elsewhere"),
    urls=Table({}, values=Text(), doc="file name -> another download URL"),
    checksums=Table({}, values=Text(), doc="file name -> 'md5:...' or 'sha256:...' replacing the published one"),
    verify=Bool(True, doc="check each file against its published checksum"),
    retries=Int(4, minimum=0, doc="download attempts after the first"),
    backoff=Number(2.0, minimum=0, doc="seconds before the first retry, doubling"),
)

#: the fraction of a source's images drawn (by patient) into the test split, where it has no official one
TEST_FRACTION = Number(0.2, above=0, below=1, doc="fraction of patients drawn into the test split")

#: a stable subset of that many images (the smallest salted hashes), for quick runs; the dense sources take it
LIMIT = Int(None, minimum=1, nullable=True, doc="keep a stable subset of this many images")

#: how every source's images become the store's 8 bits (medtl.data.imageio applies them)
IMAGE = Settings(
    intensity=Choice("full_range", choices=("full_range", "minmax", "percentile"),
                     doc="how pixel values wider than 8 bits (16-bit, 32-bit, float images) become 0-255, never "
                         "clipped: full_range scales the range the pixel type declares (uint16: v * 255 / 65535; "
                         "float: 0-1), so a 16-bit set prepares as its 8-bit rescaled copy; minmax stretches each "
                         "image's min..max; percentile each image's 0.5th..99.5th percentiles, clipping beyond "
                         "(both stretch 8-bit images too; DICOM: its window's min..max, or percentiles)"),
    background=Int("black", minimum=0, maximum=255, also=("black", "white"),
                   doc="grey level under transparent pixels (RGBA, LA, P with transparency): the image is "
                       "composited on it, never its alpha dropped"),
)


def image_options(options) -> dict:
    """The :data:`IMAGE` options of a source's merged ``options`` (defaults where absent), checked."""
    return IMAGE.resolve({k: v for k, v in (options or {}).items() if k in IMAGE.declared}, "options")


def declared_options(options) -> Settings:
    """The settings a source's ``options`` declaration allows: its own, the image options (:data:`IMAGE`) and,
    where it has raw_data, the file options (:data:`LOCATED`)."""
    declared = Settings.of(options)
    return Settings(LOCATED, declared, IMAGE) if "raw_data" in declared.declared else Settings(declared, IMAGE)
