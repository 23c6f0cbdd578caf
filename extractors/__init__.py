"""The model side of featlab: specs, weights, devices and the extraction engine."""

from featlab.extractors.engine import ExtractionResult, extract
from featlab.extractors.spec import ModelSpec, resolve_spec, spec_from_timm

__all__ = ["ExtractionResult", "ModelSpec", "extract", "resolve_spec", "spec_from_timm"]
