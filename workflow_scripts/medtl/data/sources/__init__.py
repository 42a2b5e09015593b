"""Real-data sources of the studies, one module per source; importing this package registers
each under its registry name (see docs/datasets.md for access, licence, split and config).

Classification (``DATASETS``): chexpert, mura_shoulder, mura_wrist, mura_humerus, brain_tumor_mri,
bach, isic2020, cholect50, chestxray14, ham10000, the MedMNIST flags and medmnist_npz.
Dense (``DENSE_DATASETS``): detection vindr_cxr, tbx11k, nih_cxr14_bbox; segmentation chexmask.
"""
from medtl.data.sources import (  # noqa: F401
    bach, brain_tumor, chestxray14, chexmask, chexpert, cholect50, ham10000, isic2020, medmnist, mura,
    nih_cxr14_bbox, tbx11k, vindr_cxr,
)
from medtl.data.sources.common import DENSE_SOURCES, SOURCES  # noqa: F401
