"""Real-data sources of the studies, one module per source; importing this package registers
each under its registry name (see docs/datasets.md for access, licence, split and config).

Classification: chexpert, mura_shoulder, mura_wrist, mura_humerus, brain_tumor_mri, bach,
isic2020, cholect50, chestxray14, ham10000, the MedMNIST flags and medmnist_npz.
Detection (boxes, read with ``read_boxes``): vindr_cxr, tbx11k.
"""
from medtl.data.sources import (  # noqa: F401
    bach, brain_tumor, chestxray14, chexpert, cholect50, ham10000, isic2020, medmnist, mura, tbx11k, vindr_cxr,
)
from medtl.data.sources.boxes import BOX_READERS, read_boxes  # noqa: F401
from medtl.data.sources.common import DETECTION, SOURCES  # noqa: F401
