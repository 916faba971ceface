from __future__ import annotations

from django import forms


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)


class ModelUploadForm(forms.Form):
    file = forms.FileField(
        # Kept across htmx swaps: after a refusal of the input shapes only the field is fixed.
        widget=forms.ClearableFileInput(attrs={"hx-preserve": "true"}),
        help_text="ONNX (.onnx, or a .zip with its external data), TorchScript (.pt saved "
        "with torch.jit.save), torch.export (.pt2), Keras (.keras) or a zipped TensorFlow "
        "SavedModel. A causal language model: a .zip of its Hugging Face folder (config.json, "
        "*.safetensors, tokenizer.json) or a .gguf file. ONNX is checked at once; the others "
        "are converted to ONNX by a worker. Pickled modules and state dicts (.bin) are refused.",
    )
    name = forms.CharField(
        max_length=100,
        required=False,
        help_text="Model name; uploads with the same name become new versions. "
        "Defaults to the file name.",
    )
    input_shapes = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(
            attrs={"rows": 2, "placeholder": "x: 1x3x224x224   (the name of forward's argument)"}
        ),
        help_text="Needed for TorchScript, which records no input shapes; optional for the "
        "other formats, and not used for language models. One input per line, named after "
        "the model's forward() arguments (x: 1x3x224x224; checked against the file at "
        "upload), or shapes only, in forward's "
        "order (1x3x224x224). Add a dtype when not float32 (ids: 1x128 int64). An int, "
        "float or bool argument of forward() takes its value instead (sr: 16000): it becomes "
        "a scalar input of the ONNX model.",
    )

    def clean_input_shapes(self) -> str:
        from compress_engine import EngineError, parse_input_shapes

        text = self.cleaned_data["input_shapes"]
        try:
            parse_input_shapes(text)
        except EngineError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return text


class InputShapesForm(forms.Form):
    """One size per dynamic input dim of a model version (registry.shapes.dims_to_ask)."""

    def __init__(self, dims, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for dim in dims:
            self.fields[dim.key] = forms.IntegerField(
                label=dim.label, min_value=1, max_value=1_000_000, initial=dim.value
            )


class DatasetUploadForm(forms.Form):
    file = forms.FileField(
        help_text="A .npz: arrays named after the model's inputs (or x), optional integer "
        "labels y, and an optional __modelpress__ manifest for sample axes and constants "
        "(docs/datasets.md). Or a .zip of image folders, one per class (cats/001.png, "
        "dogs/001.png): images are resized to the model's input when a job runs. For a "
        "language model, text: a UTF-8 .txt (passages split at blank lines) or a .jsonl with "
        "a text field per line. Used for calibration, training and evaluation."
    )
    name = forms.CharField(max_length=100, required=False, help_text="Defaults to the file name.")

    def __init__(self, *args, **kwargs) -> None:
        # Shares a page with the model upload form: distinct element ids.
        kwargs.setdefault("auto_id", "id_dataset_%s")
        super().__init__(*args, **kwargs)
