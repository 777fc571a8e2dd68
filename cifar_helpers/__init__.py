"""cifar-stress: train, break and explain convolutional networks on CIFAR-10.

Modules: ``config``, ``reproducibility``, ``data``, ``normalization``, ``augment``, ``models``,
``training``, ``evaluation``, ``failures``, ``gradcam``, ``plotting``, ``widgets``, ``artifacts``,
``stress``, ``calibration``, ``sanity``, ``report``, ``checks`` (the shared input checks). Import what you
need from each, e.g. ``from cifar_helpers.models import resnet18``.
"""

__version__ = "0.1.0"
