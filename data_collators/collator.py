"""`DataCollatorForDocRE`: featurized documents -> the one batch format of the project.

It is defined (with the batch format's documentation) in the model package's inference-time processing,
`modeling_pemscl/processing_pemscl.py`, so that the Hub's remote code collates exactly as training does.
"""

from modeling_pemscl.processing_pemscl import DataCollatorForDocRE

__all__ = ["DataCollatorForDocRE"]
