from __future__ import annotations

from django import forms


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)


class ModelUploadForm(forms.Form):
    file = forms.FileField(
        help_text="An .onnx file. It is checked with onnx.checker before it is stored."
    )
    name = forms.CharField(
        max_length=100,
        required=False,
        help_text="Model name; uploads with the same name become new versions. "
        "Defaults to the file name.",
    )


class DatasetUploadForm(forms.Form):
    file = forms.FileField(
        help_text="A .npz: arrays named after the model's inputs (or x), optional integer "
        "labels y. Used for calibration, training and evaluation."
    )
    name = forms.CharField(max_length=100, required=False, help_text="Defaults to the file name.")

    def __init__(self, *args, **kwargs) -> None:
        # Shares a page with the model upload form: distinct element ids.
        kwargs.setdefault("auto_id", "id_dataset_%s")
        super().__init__(*args, **kwargs)
