"""compress() as a pipeline of named stages, each a small unit that can be run and tested
alone: measure the original (original.py), run the recipe's steps (steps.py), validate the
result (validate.py), measure it (result.py), export and check the artifacts (export.py), and
write the report and place the files (write.py).

The stages hand each other typed values (Original, Steps, Validated, Measured, Exported);
what all of them share (settings, progress, timings, notes) is the Run (state.py).
"""
