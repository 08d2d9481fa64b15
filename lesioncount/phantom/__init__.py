"""A longitudinal Gd+ phantom with known truth, and lesion injection into real scans.

- :func:`make_study` writes a BIDS study (template or real-patient backgrounds, motion,
  bias, noise, 1 mm and 3 mm-slice acquisitions, mixed orientations and dtypes) with its
  truth in ``derivatives/truth``.
- :func:`inject_lesions` puts known enhancing lesions into any real post-contrast scan.
- :func:`load_template` / :func:`load_patient` give quick backgrounds.
"""
from .anatomy import load_patient, load_template, white_matter_mask
from .lesions import LesionShape, inject_lesions, random_shape, render

__all__ = ["make_study", "inject_lesions", "load_template", "load_patient", "white_matter_mask",
           "LesionShape", "random_shape", "render"]


def __getattr__(name):
    if name == "make_study":
        from .study import make_study

        return make_study
    raise AttributeError(name)
