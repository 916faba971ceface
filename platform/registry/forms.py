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
