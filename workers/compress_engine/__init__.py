"""ModelPress compression engine: a plain library (no Django) that turns an ONNX model and a
recipe into compressed artifacts plus an honest before/after report.

Importing this package is cheap: torch and onnxruntime (and onnx) load only when a model is
actually inspected, compressed or measured.
"""

from __future__ import annotations

from compress_engine._version import ENGINE_VERSION
from compress_engine.api import compress
from compress_engine.bundle import iter_bundle
from compress_engine.catalog import (
    Stage,
    StepNeeds,
    Technique,
    insert_position,
    missing_data,
    stage_plan,
    step_needs,
    technique_key,
    techniques,
    training_steps,
)
from compress_engine.configs import Recipe, default_recipe
from compress_engine.data import Dataset, load_dataset, split_sizes
from compress_engine.data_layout import MANIFEST as DATASET_MANIFEST
from compress_engine.data_layout import batch_symbols
from compress_engine.dataset_images import image_sample
from compress_engine.dataset_info import DatasetInfo, inspect_dataset, npz_sample
from compress_engine.device import WorkerDevice, cpu_model_name, probe_worker_device
from compress_engine.errors import EngineError
from compress_engine.images import ImageLayout, image_layout
from compress_engine.ingest import (
    ForwardSignature,
    IngestResult,
    InputSpec,
    ModelFormat,
    convert_to_onnx,
    detect_format,
    forward_signature,
    name_input_shapes,
    parse_input_shapes,
    signature_from_members,
    suggested_shapes,
)
from compress_engine.ingest.capability import MissingCapability, probe_capabilities
from compress_engine.inspect import inspect_onnx, same_inputs
from compress_engine.llm.ask import MAX_PROMPT_CHARS as LLM_PROMPT_MAX_CHARS
from compress_engine.llm.ask import answer_side_by_side
from compress_engine.llm.genai_zip import pack_genai_folder
from compress_engine.llm.ingest_llm import check_llm_upload
from compress_engine.llm.report_text import method_text as llm_method_text
from compress_engine.llm.text_data import TextPreview, TextSource, load_text
from compress_engine.llm.text_data import preview as text_preview
from compress_engine.onnx_files import pack_zip
from compress_engine.passes import PassInfo, list_passes
from compress_engine.presets import (
    PRESETS,
    Preset,
    PresetSuggestion,
    get_preset,
    matching_preset,
    suggest_preset,
)
from compress_engine.report import Report, TrainingPoint
from compress_engine.report_llm import LlmInfo
from compress_engine.tensors import ModelInfo, TensorInfo

__version__ = ENGINE_VERSION

__all__ = [
    "DATASET_MANIFEST",
    "ENGINE_VERSION",
    "LLM_PROMPT_MAX_CHARS",
    "PRESETS",
    "Dataset",
    "DatasetInfo",
    "EngineError",
    "ForwardSignature",
    "ImageLayout",
    "IngestResult",
    "InputSpec",
    "LlmInfo",
    "MissingCapability",
    "ModelFormat",
    "ModelInfo",
    "PassInfo",
    "Preset",
    "PresetSuggestion",
    "Recipe",
    "Report",
    "Stage",
    "StepNeeds",
    "Technique",
    "TensorInfo",
    "TextPreview",
    "TextSource",
    "TrainingPoint",
    "WorkerDevice",
    "answer_side_by_side",
    "batch_symbols",
    "check_llm_upload",
    "compress",
    "convert_to_onnx",
    "cpu_model_name",
    "default_recipe",
    "detect_format",
    "forward_signature",
    "get_preset",
    "image_layout",
    "image_sample",
    "insert_position",
    "inspect_dataset",
    "inspect_onnx",
    "iter_bundle",
    "list_passes",
    "llm_method_text",
    "load_dataset",
    "load_text",
    "matching_preset",
    "missing_data",
    "name_input_shapes",
    "npz_sample",
    "pack_genai_folder",
    "pack_zip",
    "parse_input_shapes",
    "probe_capabilities",
    "probe_worker_device",
    "same_inputs",
    "signature_from_members",
    "split_sizes",
    "stage_plan",
    "step_needs",
    "suggest_preset",
    "suggested_shapes",
    "technique_key",
    "techniques",
    "text_preview",
    "training_steps",
]
