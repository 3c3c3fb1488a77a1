"""EarlyBERT: early-bird structured lottery tickets for BERT-like models on transformers v5.

Importing the package registers the slim model classes with the transformers Auto classes, so
`AutoModelForMaskedLM.from_pretrained(slim_folder)` works after `import earlybert`.
"""

from earlybert.models.registry import register_auto_classes

register_auto_classes()

__version__ = "0.1.0"
