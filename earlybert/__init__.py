"""EarlyBERT: early-bird structured lottery tickets for BERT-like models on transformers v5.

Importing the package registers the slim model classes with the transformers Auto classes, so
`AutoModelForMaskedLM.from_pretrained(slim_folder)` works after `import earlybert`.

Importing it first, before torch, also lets MKL run its Intel kernels on AMD CPUs where EARLYBERT_MKL_INTEL_PATH=1
(`earlybert.mkl_dispatch`).
"""

from earlybert.mkl_dispatch import use_mkl_intel_path

use_mkl_intel_path()  # before anything below imports torch

from earlybert.models.registry import register_auto_classes  # noqa: E402

register_auto_classes()

__version__ = "0.1.0"
